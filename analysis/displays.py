"""Figure classes in the style of scikit-learn's ``*Display`` objects.

Each class is built in two steps: a ``from_*`` class method computes the data
(with the pure functions of :mod:`analysis.curves`), ``__init__`` only stores
it, and :meth:`plot` draws on a given or new matplotlib ``Axes`` and returns
the display, which then holds ``ax_``, ``figure_`` and the drawn artists.
``frame`` exposes the plotted data as a DataFrame. matplotlib is imported
only inside ``plot``.

Accuracies and relative costs (C, Eq. 11) are stored as fractions and drawn
in percent. Cost axes are named after the curves' cost unit (``unit`` column,
:func:`dyce_search.units.unit`): "relative MACs", "relative latency", ...;
curves of different units are refused on one axis
(:func:`analysis.curves.frame_unit`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from . import curves, tables

# Paper's Figs. 4-6 plot accuracy against cost; one size keeps the report uniform.
FIGSIZE = (6.4, 4.4)


def _axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    return ax, ax.figure


def _percent(axis) -> None:
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))


def _finish(ax, title=None, legend=True) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    if title:
        ax.set_title(title, fontsize="medium")
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", framealpha=0.9)


# A configuration offers its accuracy at every budget at or above its cost, so a
# front is a staircase; straight lines between sparse points would show
# trade-offs no single configuration reaches.
FRONT_STYLE = dict(drawstyle="steps-post", marker="o", markersize=3, linewidth=1.4)

# The original model is a star at 100 % of its cost in every trade-off figure.
_ORIGINAL_STYLE = dict(marker="*", markeredgecolor="black", markeredgewidth=0.6, linestyle="none")


def _original_marker(ax, x, accuracy, color="0.5", label=None):
    """Plot the original model (a star) at ``x``; returns the Line2D."""
    (line,) = ax.plot(x, [accuracy], markersize=13, color=color, label=label, **_ORIGINAL_STYLE)
    return line


# An in-sample curve drawn next to its held-out one: dashed and lighter, so
# the eye reads the held-out curve (what deployment meets) first.
_IN_SAMPLE_STYLE = dict(linestyle="--", linewidth=1.0, marker=None, alpha=0.75)


def _curve(ax, g, style, band=True, label=None, x=None):
    """One trade-off curve of a long frame's group; a shaded band where it has accuracy intervals.

    ``x`` defaults to the group's ``rel_cost``. Returns the line; the band (a
    PolyCollection) is drawn first so the line lies on top of it.
    """
    x = g["rel_cost"].to_numpy(float) if x is None else np.asarray(x, float)
    if band and "accuracy_low" in g and g["accuracy_low"].notna().all() and len(g):
        step = "post" if style.get("drawstyle") == "steps-post" else None
        ax.fill_between(x, g["accuracy_low"].to_numpy(float), g["accuracy_high"].to_numpy(float), step=step,
                        color=style.get("color"), alpha=0.15, linewidth=0)
    (line,) = ax.plot(x, g["accuracy"].to_numpy(float), label=label, **style)
    return line


def _split_style(style, split, mixed):
    """``style`` for a curve of ``split``; in-sample curves next to held-out ones are dashed."""
    if mixed and split == curves.IN_SAMPLE:
        return {**style, **_IN_SAMPLE_STYLE}
    return style


def relative_label(unit_name: str) -> str:
    """x-axis label of C (Eq. 11) in ``unit_name``, e.g. ``"relative latency (share of the original model)"``."""
    from dyce_search.units import unit

    return f"{unit(unit_name).relative} (share of the original model)"


def _tradeoff_axes(ax, title, unit_name, relative_x=True, legend=True) -> None:
    """Labels, percent ticks, grid and legend shared by the accuracy-vs-cost figures."""
    if relative_x:
        ax.set_xlabel(relative_label(unit_name))
        _percent(ax.xaxis)
    ax.set_ylabel("top-1 accuracy")
    _percent(ax.yaxis)
    _finish(ax, title, legend=legend)


def format_seconds(seconds: float) -> str:
    """``35 ms``, ``12.3 s``, ``4.5 min`` or ``n/a``."""
    if not np.isfinite(seconds):
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def model_label(metadata: Mapping) -> str:
    """Readable model name from cache/result metadata, e.g. ``resnet152 (synthetic)``."""
    name = metadata.get("backbone") or "model"
    return f"{name} (synthetic)" if metadata.get("synthetic") else str(name)


# ------------------------------------------------------------------- Fig. 3


def tail_label(threshold: float, n: int) -> str:
    """``"n = 123 samples with c ≥ 0.99"``: what the right end of a Fig. 3 curve rests on."""
    return f"n = {int(n):,} sample{'' if int(n) == 1 else 's'} with c ≥ {threshold:g}"


class ThresholdCurveDisplay:
    """Accuracy and fraction of samples exited at one exit vs its threshold (Fig. 3).

    The x-axis spans the thresholds of ``frame`` (by default where the
    exit's confidences are, :func:`analysis.curves.confidence_range`); the
    high-threshold tail is marked with the number of samples it rests on.

    Parameters
    ----------
    frame : DataFrame
        Output of :func:`analysis.curves.threshold_curve`.
    title : str, optional
    tail : DataFrame, optional
        :func:`analysis.curves.threshold_tail` rows: thresholds marked with
        their sample counts (``n_exited`` samples with confidence c >= t).
    """

    def __init__(self, frame: pd.DataFrame, title: str | None = None, tail: pd.DataFrame | None = None):
        self.frame = frame
        self.title = title
        self.tail = tail

    @classmethod
    def from_cache(cls, cache, position=0, exit_type=None, thresholds=None, title=None):
        """Compute the curve of exit (``position``, ``exit_type``) and its tail counts.

        See :func:`~analysis.curves.threshold_curve`; the tail is
        :func:`~analysis.curves.threshold_tail` within the curve's range.
        """
        frame = curves.threshold_curve(cache, position, exit_type, thresholds)
        t = frame["threshold"]
        tail = curves.threshold_tail(cache, position, exit_type, within=(t.min(), t.max()))
        if title is None:
            a = frame.attrs
            title = f"{model_label(cache.metadata)}: exit {a['exit_type']} at position {a['position']}"
        return cls(frame, title, tail)

    def plot(self, ax=None, show_head=True, show_tail=True, **kwargs):
        """Draw both curves; ``kwargs`` go to both ``Axes.plot`` calls.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        show_head : bool, default True
            Dotted line at the original model's accuracy A_ori.
        show_tail : bool, default True
            A thin vertical line at each tail threshold, labelled in the
            legend with how many samples have c >= t (``tail_lines_``, keyed
            by threshold), so a reader sees how few samples the right end of
            the curves rests on.
        """
        ax, fig = _axes(ax)
        f = self.frame
        (self.accuracy_line_,) = ax.plot(
            f["threshold"], f["exited_accuracy"], color="C0", label="accuracy of exited samples", **kwargs
        )
        (self.fraction_line_,) = ax.plot(
            f["threshold"], f["exited_fraction"], color="C1", linestyle="--", label="fraction of samples exited", **kwargs
        )
        self.head_line_ = None
        if show_head and "base_accuracy" in f.attrs:
            self.head_line_ = ax.axhline(
                f.attrs["base_accuracy"], color="0.4", linestyle=":", linewidth=1, label="original model accuracy"
            )
        self.tail_lines_ = {}
        if show_tail and self.tail is not None:
            for t, n in zip(self.tail["threshold"], self.tail["n_exited"]):
                self.tail_lines_[float(t)] = ax.axvline(
                    t, color="0.55", linestyle=(0, (1, 2)), linewidth=0.9, label=tail_label(t, n)
                )
        ax.set_xlabel("confidence threshold $t$")
        ax.set_ylabel("accuracy / fraction of samples")
        ax.set_xlim(float(f["threshold"].min()), float(f["threshold"].max()))
        ax.set_ylim(0, 1.02)
        _percent(ax.yaxis)
        _finish(ax, self.title)
        self.ax_, self.figure_ = ax, fig
        return self


# --------------------------------------------------------------- Figs. 4, 5


class TradeoffDisplay:
    """Accuracy vs cost of searched configurations, one curve per model (Fig. 4).

    Parameters
    ----------
    frame : DataFrame
        Long form from :func:`analysis.curves.tradeoff_curves` (``name``
        column, ``split`` optional), with ``attrs["base_accuracy"]`` a dict
        name -> A_ori. With several splits, ``lines_`` is keyed by
        ``(name, split)``; held-out curves get their intervals as bands.
        Every curve is in one cost unit (its ``unit`` column).
    total_cost : dict, optional
        name -> cost of the original model in that unit, where
        ``x="absolute"`` draws its star.
    title : str, optional
    references : DataFrame, optional
        Static models to draw as reference points, as the paper's Fig. 4
        draws the original ResNets: :func:`analysis.static_family.reference_models`
        rows (``label, accuracy, macs, used``); ``attrs["reason"]`` says why
        there are none.
    """

    def __init__(self, frame: pd.DataFrame, total_cost: Mapping | None = None, title: str | None = None,
                 references: pd.DataFrame | None = None):
        self.frame = frame
        self.total_cost = dict(total_cost or {})
        self.title = title
        self.references = references

    @classmethod
    def from_results(cls, results: Mapping, pareto: bool = True, title=None, on=None, in_sample: bool = True,
                     references: bool = True):
        """Curves of several named :class:`~dyce_search.SearchResult` (Pareto-filtered by default).

        ``on`` (a cache, or name -> cache) measures results on a held-out
        split: drawn solid with 95 % exact intervals, the in-sample front
        dashed next to it unless ``in_sample=False``
        (:func:`analysis.curves.tradeoff_curves`). ``references``: add
        torchvision's published ResNets where they compare with every curve
        (:func:`analysis.static_family.reference_models`: real ImageNet-1K
        caches with MAC costs; none for synthetic or other datasets).
        """
        from .static_family import reference_models

        frame = curves.tradeoff_curves(results, pareto=pareto, on=on, in_sample=in_sample)
        total = {str(n): r.original_cost for n, r in results.items()}
        refs = reference_models([r.metadata for r in results.values()]) if references else None
        return cls(frame, total, title, refs)

    def _plot_references(self, ax, x, scale, draw=True) -> None:
        """torchvision's published models (grey diamonds, labelled) and the weights the curves ran with (red).

        On the relative axis only for a single backbone: each curve's 100 %
        is its own backbone's MACs, and the published points need one.
        """
        self.references_, self.reference_labels_ = {}, []
        refs = self.references
        if not draw or refs is None or refs.empty:
            return
        if x == "relative":
            totals = {v for v in self.total_cost.values() if v}
            if len(totals) != 1:
                return
            xs = refs["macs"].to_numpy(float) / totals.pop()
        else:
            xs = refs["macs"].to_numpy(float) / scale
        used = refs["used"].to_numpy(bool)
        for key, mask, style in (("published", ~used, _REFERENCE_STYLE), ("used", used, _REFERENCE_USED_STYLE)):
            if mask.any():
                label = _REFERENCE_LEGEND[key].format(", ".join(refs.loc[mask, "label"]))
                (self.references_[key],) = ax.plot(xs[mask], refs.loc[mask, "accuracy"], label=label, **style)
        for xi, (_, r) in zip(xs, refs.iterrows()):
            self.reference_labels_.append(ax.annotate(
                r["label"], (xi, r["accuracy"]), xytext=(4, -3), textcoords="offset points", fontsize=6.5,
                color="#b2182b" if r["used"] else "0.3", fontweight="bold" if r["used"] else "normal"))

    # x -> (cost column of a curve, where the original model sits in it)
    def _relative_x(self, g, name, scale):
        return g["rel_cost"].to_numpy(float), 1.0

    def _absolute_x(self, g, name, scale):
        total = self.total_cost.get(name)
        if total is None or not np.isfinite(total):
            raise ValueError(f"x='absolute' needs the original model's cost of {name!r} (total_cost)")
        return g["cost"].to_numpy(float) / scale, total / scale

    _X = {"relative": _relative_x, "absolute": _absolute_x}

    def plot(self, ax=None, x="relative", show_original=True, show_references=True, **kwargs):
        """Draw one line per model and the original models as stars.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        x : {"relative", "absolute"}
            Relative cost (C, Eq. 11, in %) or the mean cost per sample
            (``cost`` column) in the curves' unit, e.g. GMACs (scaled by the
            largest original model) or ms.
        show_original : bool, default True
        show_references : bool, default True
            Draw :attr:`references` (``references_``: ``"published"`` and
            ``"used"`` lines; ``reference_labels_``: their text labels); on
            the relative axis only when all curves share one backbone's MACs.
        **kwargs
            Passed to every ``Axes.plot`` of a curve.

        Raises
        ------
        ValueError
            For an unknown ``x``.
        ResultError
            If the curves are in different cost units.
        """
        from dyce_search.units import unit

        if x not in self._X:
            raise ValueError(f"x must be one of {tuple(self._X)}, got {x!r}")
        unit_name = curves.frame_unit(self.frame, "the trade-off curves")
        position = self._X[x]
        ax, fig = _axes(ax)
        self.lines_, self.originals_ = {}, {}
        base = self.frame.attrs.get("base_accuracy", {})
        scale, absolute_label = unit(unit_name).scaled(max((v for v in self.total_cost.values() if v and np.isfinite(v)), default=1))
        splits = self.frame["split"] if "split" in self.frame else pd.Series(curves.IN_SAMPLE, self.frame.index)
        mixed = splits.nunique() > 1
        for i, (name, f) in enumerate(self.frame.groupby("name", sort=False)):
            color = f"C{i % 10}"
            own = splits.loc[f.index]
            for split, g in f.groupby(own, sort=False):
                style = _split_style(dict(FRONT_STYLE, color=color), split, own.nunique() > 1)
                style.update(kwargs)
                values, _ = position(self, g, name, scale)
                key = (name, split) if mixed else name
                self.lines_[key] = _curve(ax, g, style, label=f"{name}, {split}" if mixed else name, x=values)
            if show_original and name in base:
                self.originals_[name] = _original_marker(ax, [position(self, f, name, scale)[1]], base[name], color)
        self._plot_references(ax, x, scale, draw=show_references)
        if self.originals_:
            from matplotlib.lines import Line2D

            handles, labels = ax.get_legend_handles_labels()
            handles.append(Line2D([], [], markersize=11, color="0.5", **_ORIGINAL_STYLE))
            labels.append("original model")
            ax.legend(handles, labels, fontsize="small", framealpha=0.9)
        if x == "absolute":
            ax.set_xlabel(absolute_label)
        _tradeoff_axes(ax, self.title, unit_name, relative_x=x == "relative", legend=not self.originals_)
        self.ax_, self.figure_ = ax, fig
        return self


# Published static models: small hollow diamonds that do not compete with the curves; the
# weights the curves compress are filled red, so the eye finds "this curve's starting point".
_REFERENCE_STYLE = dict(marker="D", markersize=4.5, markerfacecolor="white", markeredgecolor="0.3",
                        markeredgewidth=0.9, linestyle="none")
_REFERENCE_USED_STYLE = dict(_REFERENCE_STYLE, markersize=5.5, markerfacecolor="#b2182b", markeredgecolor="black")
_REFERENCE_LEGEND = {
    "published": "torchvision's published models (ImageNet-1K top-1)",
    "used": "published, the weights these curves run: {}",
}


class MethodComparisonDisplay:
    """Search methods compared on one cache, search time in the legend (Fig. 5).

    Parameters
    ----------
    frame : DataFrame
        Long form from :func:`analysis.curves.tradeoff_curves`; ``name`` is
        the method label, ``attrs["search_seconds"]`` a dict label -> seconds.
    title : str, optional
    """

    def __init__(self, frame: pd.DataFrame, title: str | None = None):
        self.frame = frame
        self.title = title

    @classmethod
    def from_results(cls, results: Mapping, pareto: bool = True, title=None, on=None):
        """Curves of named results (e.g. ``{"iterative": r1, "single-pass": r2, "baseline": r3}``).

        ``on``: a held-out cache every result's front is measured on (with
        intervals) instead of its search split.
        """
        frame = curves.tradeoff_curves(results, pareto=pareto, on=on, in_sample=False)
        frame["seconds"] = frame["name"].map(frame.attrs["search_seconds"])
        return cls(frame, title)

    @classmethod
    def from_cache(cls, cache, lambdas, iterative=True, threshold="exact", pareto=True, title=None, **options):
        """Run every method of :data:`dyce_search.METHODS` on ``cache`` (:func:`analysis.searches.method_curves`).

        The descent is drawn as its dense front, the baseline with its single
        best exit type; ``iterative=False`` leaves out Algorithm 2 (slow on big
        caches). ``options`` go to every search.
        """
        from .searches import method_curves

        results = method_curves(cache, lambdas, threshold=threshold, skip=() if iterative else ("iterative",),
                                **options)
        if title is None:
            title = f"{model_label(cache.metadata)}: search methods"
        return cls.from_results(results, pareto=pareto, title=title)

    def plot(self, ax=None, show_original=True, **kwargs):
        """Draw one line per method, labelled ``"<method> (<search time>)"``.

        Raises
        ------
        ResultError
            If the methods' curves are in different cost units.
        """
        unit_name = curves.frame_unit(self.frame, "the methods' curves")
        ax, fig = _axes(ax)
        self.lines_ = {}
        seconds = self.frame.attrs.get("search_seconds", {})
        base = self.frame.attrs.get("base_accuracy", {})
        markers = "osD^v<>"
        for i, (name, f) in enumerate(self.frame.groupby("name", sort=False)):
            style = dict(FRONT_STYLE, marker=markers[i % len(markers)], color=f"C{i % 10}")
            style.update(kwargs)
            label = f"{name} (search {format_seconds(seconds.get(name, np.nan))})"
            self.lines_[name] = _curve(ax, f, style, label=label)
        self.original_ = None
        if show_original and base:
            self.original_ = _original_marker(ax, [1.0], next(iter(base.values())), label="original model")
        _tradeoff_axes(ax, self.title, unit_name)
        self.ax_, self.figure_ = ax, fig
        return self


# ------------------------------------------------------------------- Fig. 6


class EnsembleDisplay:
    """Searched ensembles vs every exit used alone (Fig. 6).

    Parameters
    ----------
    frame : DataFrame
        Long form with a ``series`` column: ``"standalone"`` rows from
        :func:`analysis.curves.standalone_exits` and one block of
        :func:`analysis.curves.tradeoff_curve` rows per searched curve
        (``series`` = its label).
    base_accuracy : float
        A_ori.
    title : str, optional
    """

    def __init__(self, frame: pd.DataFrame, base_accuracy: float, title: str | None = None):
        self.frame = frame
        self.base_accuracy = float(base_accuracy)
        self.title = title

    @classmethod
    def from_results(cls, cache, results: Mapping, costs=None, pareto=True, title=None, on=None):
        """Standalone exits of ``cache`` plus named searched curves (e.g. ensemble, ablation).

        ``on``: a held-out cache of the same model; the standalone exits and
        the searched fronts are then measured there (fronts with intervals).
        ``costs``: of the standalone exits; default the cost profile the
        first result was searched with, so that dots and curves share a unit.
        """
        if on is not None:
            curves.check_same_model(cache, on)
        if costs is None and results:
            costs = next(iter(results.values()))._stored_costs(cache if on is None else on)
        standalone = curves.standalone_exits(cache if on is None else on, costs)
        searched = curves.tradeoff_curves(results, pareto=pareto, on=on, in_sample=False)
        parts = [standalone.assign(series="standalone"), searched.rename(columns={"name": "series"})]
        frame = pd.concat(parts, ignore_index=True)
        if title is None:
            title = f"{model_label(cache.metadata)}: ensemble vs standalone exits"
        return cls(frame, standalone.attrs["base_accuracy"], title)

    @classmethod
    def from_cache(cls, cache, lambdas, disabled=3, title=None, **options):
        """The dense front of the ensemble (:func:`dyce_search.front`) and, if ``disabled`` > 0, the front
        with the first ``disabled`` positions switched off; ``options`` go to :func:`dyce_search.front`."""
        from dyce_search import front

        results = {"ensemble (all positions)": front(cache, lambdas=lambdas, **options)}
        if 0 < disabled < cache.n_positions:
            positions = list(range(disabled, cache.n_positions))
            results[f"ensemble, first {disabled} positions disabled"] = front(
                cache, lambdas=lambdas, positions=positions, **options
            )
        return cls.from_results(cache, results, title=title)

    def plot(self, ax=None, **kwargs):
        """Dots joined by dashed lines per exit type; solid lines per searched curve.

        ``kwargs`` go to the searched curves' ``Axes.plot``.

        Raises
        ------
        ResultError
            If the standalone exits and searched curves are in different cost units.
        """
        unit_name = curves.frame_unit(self.frame, "the ensemble and standalone curves")
        ax, fig = _axes(ax)
        f = self.frame
        alone = f[f["series"] == "standalone"]
        self.standalone_lines_, self.lines_ = {}, {}
        for i, (name, g) in enumerate(alone.groupby("exit_type_name", sort=False)):
            g = g.sort_values("position")
            (self.standalone_lines_[name],) = ax.plot(
                g["rel_cost"], g["accuracy"], linestyle="--", linewidth=0.8, marker="o", markersize=3,
                color=_STANDALONE_COLOURS[i % len(_STANDALONE_COLOURS)], alpha=0.8, label=f"{name} alone",
            )
        searched = [s for s in dict.fromkeys(f["series"]) if s != "standalone"]
        colours = ["#7b2d8e", "#8c564b", "#2ca02c", "#d62728"]
        for i, name in enumerate(searched):
            g = f[f["series"] == name]
            style = dict(FRONT_STYLE, linewidth=2.0, color=colours[i % len(colours)], markersize=2.5)
            style.update(kwargs)
            self.lines_[name] = _curve(ax, g, style, label=name)
        self.original_ = _original_marker(ax, [1.0], self.base_accuracy, label="original model")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        _tradeoff_axes(ax, self.title, unit_name)
        self.ax_, self.figure_ = ax, fig
        return self


# Muted colours for the many standalone series so the searched curves stand out.
_STANDALONE_COLOURS = ("#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#e377c2", "#bcbd22", "#17becf")


# ------------------------------------------------------------ generalisation


class GeneralisationDisplay:
    """Configurations searched on one split, measured on a held-out one (search vs test split).

    The configurations are the search split's Pareto front; the held-out
    curve shows the same configurations (not re-filtered there) with 95 %
    exact intervals. Configurations :func:`dyce_search.select` certified can
    be marked on it.

    Parameters
    ----------
    frame : DataFrame
        Long form with ``split`` (:data:`analysis.curves.IN_SAMPLE` /
        :data:`analysis.curves.HELD_OUT`), ``row``, ``lambda``, ``rel_cost``
        (C, Eq. 11), ``unit``, ``accuracy``, ``rel_accuracy`` (and intervals
        on the held-out rows).
    base_accuracy : dict
        split -> A_ori on that split.
    certified : DataFrame, optional
        :func:`analysis.tables.certified_levels` rows (measured on the
        held-out split) with their ``accuracy``.
    title : str, optional
    """

    def __init__(self, frame: pd.DataFrame, base_accuracy: Mapping, title: str | None = None,
                 certified: pd.DataFrame | None = None):
        self.frame = frame
        self.base_accuracy = dict(base_accuracy)
        self.title = title
        self.certified = certified

    @classmethod
    def from_result(cls, result, test_cache, calibration_cache=None, title=None, selected=None):
        """Measure ``result``'s search-split Pareto front on ``test_cache``.

        ``selected``: the :func:`dyce_search.select` result of the same
        candidates (certified on a validation split), marked on the test curve.

        Raises
        ------
        CacheError
            If ``calibration_cache`` is given and ``test_cache`` is not from
            the same model and exits (:func:`analysis.curves.check_same_model`).
        ResultError
            If the result does not fit ``test_cache``.
        """
        if calibration_cache is not None:
            curves.check_same_model(calibration_cache, test_cache)
        name = model_label(result.metadata)
        frame = curves.tradeoff_curves({name: result}, on=test_cache)
        base = {curves.IN_SAMPLE: curves.base_accuracy(result), curves.HELD_OUT: curves.head_accuracy(test_cache)}
        certified = None if selected is None else tables.certified_levels(selected, test_cache)
        if title is None:
            title = f"{name}: search split vs test split"
        return cls(frame.drop(columns="name"), base, title, certified)

    def plot(self, ax=None, **kwargs):
        """One line per split (held-out solid with its band, in-sample dashed), originals as stars,
        certified configurations as diamonds.

        Raises
        ------
        ResultError
            If the splits' curves are in different cost units.
        """
        unit_name = curves.frame_unit(self.frame, "the search and test split curves")
        ax, fig = _axes(ax)
        self.lines_, self.originals_ = {}, {}
        for i, (split, g) in enumerate(self.frame.groupby("split", sort=False)):
            color = "C0" if split == curves.HELD_OUT else "C1"
            style = _split_style(dict(FRONT_STYLE, color=color), split, mixed=True)
            style.update(kwargs)
            self.lines_[split] = _curve(ax, g, style, label=f"{split} ({len(g)} configurations)")
            if split in self.base_accuracy:
                self.originals_[split] = _original_marker(
                    ax, [1.0], self.base_accuracy[split], color, label=f"original model, {split}"
                )
        self.certified_ = None
        if self.certified is not None and len(self.certified):
            c = self.certified
            self.certified_ = ax.plot(c["rel_cost"], c["accuracy"], linestyle="none", marker="D", markersize=6,
                                      markerfacecolor="none", markeredgecolor="C2", markeredgewidth=1.4,
                                      label="certified by select (on the test split)")[0]
        _tradeoff_axes(ax, self.title, unit_name)
        self.ax_, self.figure_ = ax, fig
        return self


# --------------------------------------------------------- exit distribution


class ExitDistributionDisplay:
    """Where samples leave: fraction per position, head included, for a few configurations.

    Parameters
    ----------
    frame : DataFrame
        Output of :func:`analysis.curves.exit_distributions`.
    title : str, optional
    """

    def __init__(self, frame: pd.DataFrame, title: str | None = None):
        self.frame = frame
        self.title = title

    @classmethod
    def from_result(cls, result, cache, rows=None, labels=None, levels=tables.PAPER_LEVELS, title=None):
        """Distributions of ``rows`` of ``result`` (default: the Table II choices at ``levels``)."""
        if rows is None:
            rows, labels = tables.rows_at_levels(result, levels)
        frame = curves.exit_distributions(cache, result, rows, labels)
        if title is None:
            title = f"{model_label(cache.metadata)}: where samples exit"
        return cls(frame, title)

    def plot(self, ax=None, kind=None, **kwargs):
        """Fraction of samples per position 0..P (P = head), one series per configuration.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        kind : {"bar", "line"}, optional
            Grouped bars (default up to 20 positions) or lines with markers
            (default beyond, e.g. the 50 positions of ResNet-152).
        **kwargs
            Passed to ``Axes.bar`` / ``Axes.plot``.
        """
        ax, fig = _axes(ax)
        self.artists_ = {}
        groups = list(self.frame.groupby("label", sort=False))
        names = list(groups[0][1]["position_name"])
        n = len(names)
        kind = kind or ("bar" if n <= 20 else "line")
        if kind not in ("bar", "line"):
            raise ValueError(f"kind must be 'bar' or 'line', got {kind!r}")
        width = 0.8 / len(groups)
        markers = "osD^v"
        for i, (label, g) in enumerate(groups):
            color = f"C{i % 10}"
            if kind == "bar":
                x = g["position"].to_numpy() - 0.4 + width * (i + 0.5)
                self.artists_[label] = ax.bar(x, g["fraction"], width=width, color=color, label=label, **kwargs)
            else:
                style = dict(marker=markers[i % len(markers)], markersize=3.5, linewidth=1.2, color=color)
                style.update(kwargs)
                (self.artists_[label],) = ax.plot(g["position"], g["fraction"], label=label, **style)
        step = max(1, int(np.ceil(n / 16)))
        ticks = sorted(set(range(0, n, step)) | {n - 1})
        if len(ticks) > 2 and n - 1 - ticks[-2] < step / 2:
            ticks.remove(ticks[-2])  # keep the head's label legible
        ax.set_xticks(ticks)
        ax.set_xticklabels([names[t] for t in ticks], rotation=60, ha="right", fontsize="x-small")
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_xlabel("exit position (last: original head)")
        ax.set_ylabel("fraction of samples exiting")
        ax.set_ylim(bottom=0)
        _percent(ax.yaxis)
        _finish(ax, self.title)
        if kind == "bar":
            ax.grid(False, axis="x")
        self.ax_, self.figure_ = ax, fig
        return self
