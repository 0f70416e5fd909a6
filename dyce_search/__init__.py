"""dyce_search: exit caches, DyCE metrics and configuration search (numpy + numba, no torch).

Public names are imported lazily so that ``import dyce_search`` stays cheap and
numba compilation only happens when a kernel is first needed.
"""

from .errors import CacheError, CostError, DyceError, ResultError

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "ExitCache": "cache",
    "Costs": "costs",
    "Objective": "objective",
    "Config": "config",
    "evaluate": "evaluation",
    "simulate": "evaluation",
    "Evaluation": "evaluation",
    "Simulation": "evaluation",
    "run": "search",
    "cheapest": "targets",
    "most_accurate": "targets",
    "front": "targets",
    "METHODS": "methods",
    "select": "selection",
    "split": "selection",
    "minimize_threshold": "thresholds",
    "SearchResult": "result",
    "load_result": "result",
    "synthetic": None,
    "exit_rule": None,
}

__all__ = ["CacheError", "CostError", "DyceError", "ResultError", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'dyce_search' has no attribute {name!r}")
    import importlib

    module = _LAZY[name]
    if module is None:
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__():
    return sorted(__all__)
