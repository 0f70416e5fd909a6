"""analysis: the DyCE paper's figures and tables from exit caches and search results.

- :mod:`analysis.curves`, :mod:`analysis.tables`: pure functions returning DataFrames.
- :mod:`analysis.displays`: ``*Display`` classes (``from_*`` constructors, ``plot(ax=None)``).
- :mod:`analysis.searches`: searches the figures need beyond ``dyce_search.run`` (Fig. 5 baseline).
- :mod:`analysis.static_family`: torchvision's published ResNets, Fig. 4's reference points (shipped data).
- :mod:`analysis.figure_files`: reproducible figure files (same figure, same bytes).
- :mod:`analysis.report`: the pipeline behind ``python -m analysis``.

Submodules are imported lazily so that ``import analysis`` stays cheap; matplotlib
is imported only when something is plotted.
"""

_LAZY = {
    "threshold_curve": "curves",
    "confidence_range": "curves",
    "threshold_tail": "curves",
    "tradeoff_curve": "curves",
    "tradeoff_curves": "curves",
    "held_out_curve": "curves",
    "pareto_front": "curves",
    "standalone_exits": "curves",
    "exit_distribution": "curves",
    "exit_distributions": "curves",
    "required_cost": "tables",
    "table_ii": "tables",
    "table_ii_wide": "tables",
    "held_out_levels": "tables",
    "certified_levels": "tables",
    "table_ii_held_out": "tables",
    "ThresholdCurveDisplay": "displays",
    "TradeoffDisplay": "displays",
    "MethodComparisonDisplay": "displays",
    "EnsembleDisplay": "displays",
    "GeneralisationDisplay": "displays",
    "ExitDistributionDisplay": "displays",
    "single_type_baseline": "searches",
    "reference_models": "static_family",
    "save_figure_file": "figure_files",
    "build_report": "report",
    "ReportOptions": "report",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


def __dir__():
    return __all__
