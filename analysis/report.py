"""The report pipeline: searches, the paper's figures and Table II, and an index page.

:func:`build_report` runs the searches each figure needs (the dense front of
:func:`dyce_search.front` on every cache, :func:`dyce_search.cheapest` for
Table II, the first-positions-disabled front for Fig. 6, every method of
:data:`dyce_search.METHODS` on one cache for Fig. 5), draws every figure as
PNG and PDF, writes each figure's data and Table II as CSV / Markdown, saves
the search results as JSON and links everything from ``README.md``. Every
file is written atomically.

Layout of the output folder::

    README.md                       index: inputs, Table II, figures, results
    figures/<figure>-<slug>.{png,pdf}
    data/<figure>-<slug>.csv        the numbers behind each figure
    tables/table2[-<task>].{csv,md} Table II (text cells, "not reached")
    tables/table2-long[-<task>].csv Table II with lambda/accuracy of each choice
    results/<slug>-<search>.json    search results (dyce_search.load_result)

Splits: every search runs on the cache it is given (the *search split*).
Figures and tables measured there are labelled in-sample. With a test cache,
Table II and the fronts are also measured on held-out data, with 95 %
intervals, and :func:`dyce_search.select` certifies one configuration per
Table II level on a *validation* split: the given validation cache, else
half of the test cache (drawn with ``ReportOptions.split_seed``), the other
half then being the test split every held-out figure uses, so that no
reported number is measured on samples that chose it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dyce_search import CacheError

from . import curves, tables
from .figure_files import FORMATS, save_figure_file, source_date
from .searches import method_curves
from .displays import (
    EnsembleDisplay,
    ExitDistributionDisplay,
    GeneralisationDisplay,
    MethodComparisonDisplay,
    ThresholdCurveDisplay,
    TradeoffDisplay,
    format_seconds,
    model_label,
)

#: The paper's lambda grid: 0, 0.01, ..., 1 (Sec. VI-C).
PAPER_LAMBDAS = np.round(np.linspace(0.0, 1.0, 101), 10)
#: Seeding grid of Table II's cheapest() next to the front's configurations.
TABLE_II_LAMBDAS = np.round(np.linspace(0.0, 1.0, 21), 10)


@dataclass
class NamedCache:
    """A cache with the name it carries in legends and file names.

    ``costs``: the cost profile (:class:`dyce_search.Costs`) every search and
    held-out measurement of this model uses, and whose unit its figures and
    tables show; None: the cache's MACs. ``costs_source`` says where it came from.
    """

    name: str
    cache: object
    source: str = ""
    costs: object = None
    costs_source: str = ""

    @property
    def unit(self) -> str:
        """Cost unit of this model's results (:mod:`dyce_search.units`)."""
        from dyce_search.units import DEFAULT_UNIT

        return DEFAULT_UNIT if self.costs is None else self.costs.unit

    @property
    def slug(self) -> str:
        return slugify(self.name)


@dataclass
class ReportOptions:
    """What :func:`build_report` computes.

    Attributes
    ----------
    lambdas : array of float
        lambda values of every search (Eq. 12).
    iterative : bool
        Run the iterative search (Algorithm 2) for Fig. 5 (slow on big caches).
    compare_on : int
        Index of the cache Fig. 5 compares the search methods on.
    threshold_position, threshold_exit_type
        The exit of Fig. 3 (index or name; exit type None = largest).
    disabled : int
        Fig. 6 ablation: number of leading positions switched off (0 = none).
    levels : tuple of float
        Table II accuracy-drop levels.
    threshold : str
        Threshold minimiser of the paper's methods in Fig. 5 (``"exact"`` or
        ``"bounded"``); fronts and Table II are always exact.
    objective : str
        Objective scale of every search (``"paper"``/``"normalized"``).
    delta : float
        Allowed violation probability of the certified Table II rows
        (:func:`dyce_search.select`).
    risk : str or None
        Risk :func:`dyce_search.select` bounds; None: ``"accuracy"`` when the
        validation split is labelled, else ``"agreement"``.
    split_seed : int
        Seed of the validation/test halves cut from a test cache when no
        validation cache is given.
    n_boot : int
        Bootstrap resamples of the held-out Table II intervals.
    progress : bool
        Show a progress bar.
    """

    lambdas: np.ndarray = field(default_factory=lambda: PAPER_LAMBDAS.copy())
    iterative: bool = True
    compare_on: int = 0
    threshold_position: object = 0
    threshold_exit_type: object = None
    disabled: int = 3
    levels: tuple = tables.PAPER_LEVELS
    threshold: str = "exact"
    objective: str = "paper"
    delta: float = 0.1
    risk: str | None = None
    split_seed: int = 0
    n_boot: int = 1000
    progress: bool = True


@dataclass
class HeldOut:
    """The held-out splits of one model: ``validation`` certifies, ``test`` reports; None without a test cache."""

    validation: object = None
    test: object = None
    validation_source: str = ""
    test_source: str = ""

    @property
    def tested(self) -> bool:
        return self.test is not None


@dataclass
class Report:
    """What :func:`build_report` wrote: the index and every file, by section."""

    out: Path
    index: Path
    files: list = field(default_factory=list)


def slugify(text: str) -> str:
    """File-name-safe form of a model name: ``"resnet152 (synthetic)" -> "resnet152-synthetic"``."""
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", str(text)).strip("-._").lower()
    return slug or "model"


def name_caches(caches: Sequence, sources: Sequence[str] | None = None) -> list[NamedCache]:
    """Give each cache a unique readable name (backbone, synthetic flag, split if needed)."""
    sources = list(sources) if sources is not None else [""] * len(caches)
    base = [model_label(c.metadata) for c in caches]
    names = []
    for i, (label, cache) in enumerate(zip(base, caches)):
        name = label
        if base.count(label) > 1 and cache.metadata.get("split"):
            name = f"{label} {cache.metadata['split']}"
        while name in names or slugify(name) in {slugify(n) for n in names}:
            name = f"{name} #{i + 1}"
        names.append(name)
    return [NamedCache(n, c, s) for n, c, s in zip(names, caches, sources)]


def task_key(cache, unit: str | None = None) -> tuple:
    """Caches with the same key are compared in one Fig. 4 and Table II.

    Accuracies of different tasks do not compare, nor do costs in different
    units (``unit``: of the model's cost profile, default MACs), so each
    (dataset, classes, unit) gets its own figure and table.
    """
    from dyce_search.units import DEFAULT_UNIT

    return (cache.metadata.get("dataset") or "unknown dataset", int(cache.num_classes), unit or DEFAULT_UNIT)


# ---------------------------------------------------------------------- I/O


def _write_bytes(path: Path, data: bytes) -> Path:
    from dyce_search._io import write_bytes_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    return path


def _write_text(path: Path, text: str) -> Path:
    return _write_bytes(path, text.encode("utf-8"))


def save_figure(display, out: Path, stem: str) -> list[Path]:
    """Save a plotted display as ``figures/<stem>.png`` and ``.pdf`` and its data as ``data/<stem>.csv``.

    The figure files are reproducible (:mod:`analysis.figure_files`): the same figure, the same bytes.
    """
    import matplotlib.pyplot as plt

    paths = [save_figure_file(display.figure_, out / "figures" / f"{stem}.{ext}") for ext in FORMATS]
    plt.close(display.figure_)
    paths.append(_write_text(out / "data" / f"{stem}.csv", display.frame.to_csv(index=False)))
    return paths


# ----------------------------------------------------------------- pipeline


def check_inputs(caches: Sequence[NamedCache], tests: Sequence, options: ReportOptions,
                 validations: Sequence = ()) -> None:
    """Fail before any search: every test / validation cache must match its search cache and hold other
    samples, options in range.

    Raises
    ------
    CacheError
        Naming the cache pair and what differs.
    CostError
        If a cost profile (``NamedCache.costs``) does not fit its search,
        test or validation cache, naming the model and the profile.
    ValueError
        For a bad option (lambdas outside [0, 1], ``compare_on`` out of range, ...).
    """
    if not caches:
        raise CacheError("no caches given")
    if len(tests) > len(caches):
        raise CacheError(f"{len(tests)} test caches for {len(caches)} caches (--test pairs with the caches in order)")
    if len(validations) > len(tests):
        raise CacheError(f"{len(validations)} validation caches for {len(tests)} test caches (each validation "
                         "cache pairs with a test cache: certified rows are reported on the test split)")
    for i, (named, test) in enumerate(zip(caches, tests)):
        validation = validations[i] if i < len(validations) else None
        held = {"test": test, "validation": validation}
        for what, cache in held.items():
            if cache is None:
                continue
            try:
                curves.check_same_model(named.cache, cache, "search cache", f"{what} cache")
            except CacheError as e:
                raise CacheError(f"{what} cache for {named.name!r}: {e}") from None
            if cache.samples_digest == named.cache.samples_digest:
                raise CacheError(f"{what} cache for {named.name!r} holds exactly the samples of the search cache; "
                                 "held-out figures need other samples")
        if validation is not None and test is None:
            raise CacheError(f"a validation cache for {named.name!r} without a test cache: certified rows are "
                             "reported on the test split")
        if validation is not None and validation.samples_digest == test.samples_digest:
            raise CacheError(f"validation and test caches for {named.name!r} hold the same samples; the certified "
                             "rows would be measured on the samples that chose them")
    for i, named in enumerate(caches):
        validation = validations[i] if i < len(validations) else None
        _check_costs(named, {"search": named.cache, "test": tests[i] if i < len(tests) else None,
                             "validation": validation})
    from dyce_search.stats import check_open_unit

    check_open_unit(options.delta, "delta")
    from dyce_search.selection import RISKS

    if options.risk is not None and options.risk not in RISKS:
        raise ValueError(f"risk must be one of {tuple(RISKS)}, got {options.risk!r}")
    if options.n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {options.n_boot}")
    lam = np.asarray(options.lambdas, dtype=float)
    if lam.ndim != 1 or lam.size == 0 or not np.all((lam >= 0) & (lam <= 1)):
        raise ValueError("lambdas must be a non-empty list of values in [0, 1]")
    if not 0 <= options.compare_on < len(caches):
        raise ValueError(f"compare_on={options.compare_on} is out of range for {len(caches)} caches")
    if options.disabled < 0:
        raise ValueError(f"disabled must be >= 0, got {options.disabled}")
    tables._check_levels(options.levels)
    # resolve early so that a bad --fig3-position/--fig3-exit-type fails before the searches
    for named in caches:
        p = named.cache.position_index(options.threshold_position)
        if options.threshold_exit_type is not None:
            k = named.cache.exit_type_index(options.threshold_exit_type)
            if not named.cache.available[p, k]:
                raise CacheError(
                    f"{named.name}: exit type {named.cache.exit_types[k]!r} is not available at "
                    f"position {named.cache.positions[p]!r}"
                )


def _check_costs(named: NamedCache, held: dict) -> None:
    """Raise CostError unless ``named.costs`` fits every cache of the model (each ``held`` value, None: absent)."""
    from dyce_search import CostError, Costs

    if named.costs is None:
        return
    if not isinstance(named.costs, Costs):
        raise CostError(f"costs for {named.name!r} must be a dyce_search.Costs, got {type(named.costs).__name__}")
    where = named.costs_source or f"the {named.costs.unit} cost profile"
    for what, cache in held.items():
        if cache is None:
            continue
        try:
            named.costs.check(cache, override=None)  # a report compares one model's figures: no override
        except CostError as e:
            raise CostError(f"{where} for {named.name!r} does not fit its {what} cache: {e}") from None


class _Steps:
    """A tqdm bar over the pipeline steps; off with ``enabled=False``, and when stderr is not a TTY."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, disable=None if enabled else True, unit="step", desc="analysis", leave=False)

    def __call__(self, text: str) -> None:
        self.bar.set_description_str(text[:60])

    def done(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class _Output:
    """The output folder while the report is built: what has been written, by section."""

    SECTIONS = ("fig3", "fig4", "fig5", "fig6", "generalisation", "distribution")

    def __init__(self, out: Path):
        self.out = out
        self.sections: dict[str, list] = {k: [] for k in self.SECTIONS}
        self.tables: list[tuple] = []  # (task, markdown, paths)
        self.results: list[Path] = []

    def figure(self, section, title, stem, display, note=""):
        paths = save_figure(display, self.out, stem)
        self.sections[section].append(dict(title=title, stem=stem, paths=paths, note=note))

    def result(self, result, stem):
        path = self.out / "results" / f"{stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        result.save(path)
        self.results.append(path)

    def files(self) -> list[Path]:
        every = [p for entries in self.sections.values() for e in entries for p in e["paths"]]
        every += [p for _, _, paths in self.tables for p in paths] + self.results
        return sorted({Path(p) for p in every})


def build_report(caches, out, test_caches=None, options: ReportOptions | None = None,
                 validation_caches=None) -> Report:
    """Run the searches and write every figure, table and the index into ``out``.

    Parameters
    ----------
    caches : sequence of ExitCache or NamedCache
        Search caches (the searches run on these). A NamedCache's ``costs``
        (a :class:`dyce_search.Costs`, e.g. a latency profile) is that
        model's cost in every search and held-out measurement, checked
        against its caches before any search; its figures and tables are
        labelled in its unit, one Fig. 4 and Table II per unit.
    out : path
        Output folder (created once the inputs are checked).
    test_caches : sequence of ExitCache, NamedCache or None, optional
        Paired with ``caches`` in order (None: that cache has none):
        held-out figures, Table II on the test split and its certified rows
        (the names of NamedCache test caches are ignored, their sources
        shown).
    options : ReportOptions, optional
    validation_caches : sequence of ExitCache or NamedCache, optional
        Paired with ``test_caches`` in order: where :func:`dyce_search.select`
        certifies. A test cache without one is cut in two halves
        (validation, test) with ``options.split_seed``.

    Returns
    -------
    Report

    Raises
    ------
    CacheError
        If a test or validation cache does not match its search cache or
        repeats its samples (before anything is written).
    CostError
        If a model's cost profile does not fit its caches (before anything is written).
    ResultError
        If results cannot be compared.
    OutputError
        If ``out`` cannot be written (before any search runs).
    """
    import sys

    import matplotlib

    from dyce_search._io import check_writable

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only; never open a window

    options = options or ReportOptions()
    if all(isinstance(c, NamedCache) for c in caches):
        named = list(caches)
    else:
        named = name_caches([c.cache if isinstance(c, NamedCache) else c for c in caches])
    tests = [t if isinstance(t, NamedCache) else NamedCache("test", t) for t in (test_caches or [])]
    validations = [v if isinstance(v, NamedCache) else NamedCache("validation", v) for v in (validation_caches or [])]
    check_inputs(named, [t.cache for t in tests], options, [v.cache for v in validations])
    check_writable(out, folder=True)
    held = _held_out_splits(named, tests, validations, options)

    groups: dict[tuple, list[NamedCache]] = {}
    for n in named:
        groups.setdefault(task_key(n.cache, n.unit), []).append(n)
    n_tested = sum(h.tested for h in held.values())
    n_steps = (
        5 * len(named)  # front, Table II search, Fig. 3, Fig. 6 (with its ablation front), exit distribution
        + 2 * n_tested  # select, held-out figure
        + 2 * len(groups)  # Fig. 4, Table II
        + 2  # Fig. 5: the paper's methods, plot
    )
    output = _Output(Path(out))
    output.out.mkdir(parents=True, exist_ok=True)
    step = _Steps(n_steps, options.progress)
    try:
        results, targets = _searches(named, options, output, step)
        selected = _select(named, held, results, options, output, step)
        _fig3(named, held, options, output, step)
        _fig4_and_table_ii(groups, held, results, targets, selected, options, output, step)
        methods = _fig5(named[options.compare_on], held, results, options, output, step)
        _fig6(named, held, results, options, output, step)
        _generalisation(named, held, results, selected, output, step)
        _exit_distribution(named, targets, options, output, step)
    finally:
        step.close()
    index = _write_text(output.out / "README.md", _index(output, named, held, options, results, methods, selected))
    return Report(out=output.out, index=index, files=sorted(set(output.files()) | {index}))


def _held_out_splits(named, tests, validations, options) -> dict:
    """name -> :class:`HeldOut`; a test cache without a validation cache is halved (validation, test)."""
    from dyce_search import split
    from dyce_search.objective import reference_labels

    held = {}
    for i, n in enumerate(named):
        if i >= len(tests) or tests[i].cache is None:
            held[n.name] = HeldOut()
            continue
        test = tests[i]
        if i < len(validations):
            h = HeldOut(validations[i].cache, test.cache, validations[i].source, test.source)
        else:
            validation, rest = split(test.cache, (0.5, 0.5), seed=options.split_seed, names=("validation", "test"))
            where = test.source or "the test cache"
            h = HeldOut(validation, rest, f"half of {where} (split seed {options.split_seed})",
                        f"other half of {where} (split seed {options.split_seed})")
        if options.risk == "accuracy" and not reference_labels(h.validation)[1]:
            raise CacheError(f"validation split for {n.name!r} has unlabelled samples; risk='accuracy' needs "
                             "labels (risk='agreement' does not)")
        held[n.name] = h
    return held


def _risk(options, validation) -> str:
    from dyce_search.objective import reference_labels

    if options.risk is not None:
        return options.risk
    return "accuracy" if reference_labels(validation)[1] else "agreement"


def _run_options(options: ReportOptions, named: NamedCache) -> dict:
    """Options of every search on ``named``'s cache: its cost profile (None: MACs) goes to each."""
    # the searches' own bars (per lambda) move inside a long step such as the
    # iterative search of Fig. 5; like the step bar, only on a terminal
    return dict(objective=options.objective, costs=named.costs, progress=None if options.progress else False)


def _searches(named, options, output, step) -> tuple[dict, dict]:
    """The dense front of every cache (Figs. 4, 6, generalisation) and Table II by :func:`dyce_search.cheapest`."""
    from dyce_search import METHODS, cheapest, front, run

    # Compile (or load from numba's cache) every kernel on a few lambdas first,
    # so the search times the report quotes are the searches', not the compiler's.
    warm = named[0]
    quiet = {**_run_options(options, warm), "progress": False}
    for name, method in METHODS.items():
        run(warm.cache, [0.5], method=name, threshold=method.thresholds[-1], **quiet)
    cheapest(warm.cache, [0.05], lambdas=[0.0, 1.0], **quiet)

    results, targets = {}, {}
    for n in named:
        step(f"front: {n.name}")
        results[n.name] = front(n.cache, lambdas=options.lambdas, **_run_options(options, n))
        output.result(results[n.name], f"{n.slug}-front")
        step.done()
        step(f"Table II search: {n.name}")
        # the front already holds every non-dominated configuration of the fine sweep: a
        # coarse seeding grid (for the bisection brackets) is enough next to it
        targets[n.name] = cheapest(n.cache, options.levels, lambdas=TABLE_II_LAMBDAS, starts=results[n.name],
                                   **_run_options(options, n))
        output.result(targets[n.name], f"{n.slug}-table2")
        step.done()
    return results, targets


def _select(named, held, results, options, output, step) -> dict:
    """name -> :func:`dyce_search.select` of the front at the Table II levels, for models with a test split."""
    from dyce_search import select

    selected = {}
    for n in named:
        h = held[n.name]
        if not h.tested:
            continue
        step(f"select: {n.name}")
        selected[n.name] = select(results[n.name], h.validation, max_drop=list(options.levels), delta=options.delta,
                                  risk=_risk(options, h.validation))
        output.result(selected[n.name], f"{n.slug}-certified")
        step.done()
    return selected


def _risk_samples(selected) -> int:
    """n of the binomial tests of a select result (validation samples the risk counts)."""
    return int(selected.metadata["validation"].get("risk_samples", selected.metadata["validation"]["n_samples"]))


def _measured_on(h) -> str:
    """Title suffix naming the split a figure is measured on."""
    return curves.HELD_OUT if h.tested else curves.IN_SAMPLE


def _fig3(named, held, options, output, step) -> None:
    for n in named:
        step(f"Fig. 3: {n.name}")
        h = held[n.name]
        # a threshold curve is not fitted to its split; the held-out one is what deployment meets
        cache = h.test if h.tested else n.cache
        d = ThresholdCurveDisplay.from_cache(cache, options.threshold_position, options.threshold_exit_type).plot()
        a = d.frame.attrs
        split = curves.HELD_OUT if h.tested else curves.IN_SAMPLE
        output.figure("fig3", f"{n.name}: exit {a['exit_type']} at position {a['position']} ({split})",
                      f"fig3-threshold-{n.slug}", d, note=_tail_note(d.tail))
        step.done()


def _tail_note(tail) -> str:
    """The Fig. 3 tail counts as a sentence for the index."""
    from .displays import tail_label

    counts = "; ".join(tail_label(t, n) for t, n in zip(tail["threshold"], tail["n_exited"]))
    return f"right end: {counts}"


def _references_note(references) -> str:
    """Whether Fig. 4 shows torchvision's published models, and why not."""
    if references is None:
        return ""
    if references.empty:
        return f"torchvision's published ResNets are not drawn: {references.attrs.get('reason')}."
    used = ", ".join(references.loc[references["used"], "label"]) or "none of them (other weights)"
    return ("Diamonds (absolute-MACs panel): torchvision's published ImageNet-1K top-1 and MACs of its ResNets, "
            f"from its weights metadata, not measured here; filled red: the weights these curves run ({used}).")


def _fig4_and_table_ii(groups, held, results, targets, selected, options, output, step) -> None:
    """One Fig. 4 and one Table II per task and cost unit: accuracies of different tasks do not compare,
    costs of different units share no axis."""
    import matplotlib.pyplot as plt

    from dyce_search.units import unit

    levels = options.levels
    for (dataset, n_classes, unit_name), members in groups.items():
        suffix = "" if len(groups) == 1 else f"-{slugify(dataset)}-{n_classes}-{slugify(unit_name)}"
        u = unit(unit_name)
        task = f"{dataset}, {n_classes} classes, {u.label}"
        group = {n.name: results[n.name] for n in members}
        on = {n.name: held[n.name].test for n in members if held[n.name].tested}
        step(f"Fig. 4: {task}")
        where = "test split, 95% intervals" if on else curves.IN_SAMPLE
        d = TradeoffDisplay.from_results(group, title=f"DyCE trade-off ({task}; {where})", on=on)
        published = d.references is not None and not d.references.empty
        if len(group) > 1 or published:
            # relative costs put every original model at 100%; absolute costs show how backbones compare,
            # and place the published models as the paper's Fig. 4 does
            fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained", sharey=True)
            d.plot(ax=right, x="absolute")
            right.set_title(f"absolute {u.quantity}", fontsize="medium")
            right.set_ylabel("")
            right.get_legend().remove()  # the left panel's legend covers both
            if d.references_:
                right.legend(handles=list(d.references_.values()), fontsize="small", framealpha=0.9)
            d.plot(ax=left, show_references=False)
            left.set_title(u.relative, fontsize="medium")
            fig.suptitle(d.title)
        else:
            d.plot()
        output.figure("fig4", task, f"fig4-tradeoff{suffix}", d, note=_references_note(d.references))
        if published:
            stem = f"fig4-tradeoff{suffix}-published"
            output.sections["fig4"][-1]["paths"].append(
                _write_text(output.out / "data" / f"{stem}.csv", d.references.to_csv(index=False)))
        step.done()

        step(f"Table II: {task}")
        parts = []
        for n in members:
            h = held[n.name]
            if h.tested:
                parts.append(tables.table_ii_held_out(n.name, targets[n.name], results[n.name], selected[n.name],
                                                      h.test, levels, n_boot=options.n_boot,
                                                      seed=options.split_seed))
            else:
                parts.append(tables.table_ii({n.name: targets[n.name]}, levels).assign(basis=tables.IN_SAMPLE_BASIS))
        long = pd.concat(parts, ignore_index=True)
        first = ["model", "basis"]
        long = long[first + [c for c in long.columns if c not in first]]
        wide = tables.table_ii_wide(long)
        md = tables.to_markdown(wide)
        paths = [
            _write_text(output.out / "tables" / f"table2{suffix}.csv", wide.to_csv()),
            _write_text(output.out / "tables" / f"table2{suffix}.md", md),
            _write_text(output.out / "tables" / f"table2-long{suffix}.csv", long.to_csv(index=False)),
        ]
        output.tables.append((task, md, paths))
        step.done()


def _fig5(compare, held, results, options, output, step) -> dict:
    """Every search method on one cache; returns label -> SearchResult."""
    from dyce_search import METHODS

    step(f"Fig. 5 searches: {compare.name}")
    descent = results[compare.name]
    methods = method_curves(
        compare.cache, options.lambdas, threshold=options.threshold,
        skip=() if options.iterative else ("iterative",),
        given={"descent": (f"{METHODS['descent'].label} (front)", descent)}, **_run_options(options, compare),
    )
    for label, result in methods.items():
        if result is not descent:
            output.result(result, f"{compare.slug}-{slugify(label)}")
    step.done()
    step("Fig. 5")
    h = held[compare.name]
    d = MethodComparisonDisplay.from_results(methods, title=f"{compare.name}: search methods ({_measured_on(h)})",
                                             on=h.test).plot()
    output.figure("fig5", compare.name, f"fig5-methods-{compare.slug}", d)
    step.done()
    return methods


def _fig6(named, held, results, options, output, step) -> None:
    from dyce_search import front

    k = options.disabled
    for n in named:
        step(f"Fig. 6: {n.name}")
        searched = {"ensemble (all positions)": results[n.name]}
        note = ""
        if 0 < k < n.cache.n_positions:
            searched[f"ensemble, first {k} positions disabled"] = front(
                n.cache, lambdas=options.lambdas, positions=list(range(k, n.cache.n_positions)),
                **_run_options(options, n),
            )
        elif k:
            note = f"ablation skipped: the cache has only {n.cache.n_positions} early positions"
        h = held[n.name]
        d = EnsembleDisplay.from_results(n.cache, searched, costs=n.costs, on=h.test,
                                         title=f"{n.name}: ensemble vs standalone exits ({_measured_on(h)})").plot()
        output.figure("fig6", n.name, f"fig6-ensemble-{n.slug}", d, note)
        step.done()


def _generalisation(named, held, results, selected, output, step) -> None:
    for n in named:
        h = held[n.name]
        if not h.tested:
            continue
        step(f"held out: {n.name}")
        d = GeneralisationDisplay.from_result(results[n.name], h.test, n.cache, selected=selected[n.name],
                                              title=f"{n.name}: search split vs test split").plot()
        output.figure("generalisation", n.name, f"generalisation-{n.slug}", d)
        step.done()


def _exit_distribution(named, targets, options, output, step) -> None:
    for n in named:
        step(f"exit distribution: {n.name}")
        d = ExitDistributionDisplay.from_result(targets[n.name], n.cache, levels=options.levels,
                                                title=f"{n.name}: where samples exit ({curves.IN_SAMPLE})").plot()
        output.figure("distribution", n.name, f"exit-distribution-{n.slug}", d)
        step.done()


# -------------------------------------------------------------------- index


def _rel(out: Path, path) -> str:
    return Path(os.path.relpath(path, out)).as_posix()


_SECTION_TEXT = {
    "fig3": (
        "Fig. 3: accuracy and fraction exited vs threshold",
        "One exit alone: as its confidence threshold t rises, fewer samples leave there (dashed) "
        "but those that do are classified more accurately (solid). The dotted line is the "
        "original model's accuracy. The threshold axis spans where the exit's confidences are (from the "
        "1% quantile, where 99% of the samples still exit, to the largest confidence); thin vertical lines "
        "mark high thresholds, labelled with how many samples have a confidence at or above them: the "
        "right end of the curves rests on those few. Measured on the test split where there is one.",
    ),
    "fig4": (
        "Fig. 4: accuracy vs relative cost",
        "Dense non-dominated front of each backbone (`dyce_search.front`: the descent over all "
        "lambdas merged with the cheapest configuration for every accuracy level it met), against C "
        "(Eq. 11) in the model's cost unit (see Inputs; one figure per unit); stars are "
        "the original models (100% of their cost). Accuracy is absolute so backbones compare. A configuration "
        "offers its accuracy at any budget at or above its cost, so fronts are drawn as steps. Where a "
        "model has a test split, its front's configurations are measured there (solid, shaded: 95% exact "
        "binomial intervals) and the search split's front is dashed: that curve is in-sample, the "
        "thresholds were fitted to those samples. Where the caches are real ImageNet-1K runs with MAC costs, "
        "the absolute-MACs panel also shows torchvision's published ResNets (accuracy and MACs from its "
        "weights metadata) as reference points, as the paper's Fig. 4 does; for other caches (synthetic, "
        "other datasets) they would not compare, and the figure's note says so.",
    ),
    "fig5": (
        "Fig. 5: search methods",
        "Every search method on one cache: the descent's dense front, the paper's iterative "
        "(Algorithm 2) and single-pass (Algorithm 3) searches, and the baseline that uses one exit "
        "type everywhere with one shared threshold (the best type), each the Pareto front of its "
        "lambda sweep, drawn as steps; legends give each search's total time. The title says whether "
        "the curves are measured on the search split (in-sample) or on the test split.",
    ),
    "fig6": (
        "Fig. 6: ensemble vs standalone exits",
        "Each dot is one exit used alone with threshold 0 (every sample leaves there), dashed "
        "lines join the positions of one exit type; solid lines are the dense fronts of searched "
        "ensembles, with and without the first positions. The title says which split they are measured on.",
    ),
    "generalisation": (
        "Held out: search split vs test split",
        "The search split's front (dashed, in-sample) and the same configurations measured unchanged on "
        "the test split (solid, shaded: 95% exact intervals). Diamonds: the configurations `dyce_search.select` "
        "certified on the validation split for each Table II level, measured on the test split.",
    ),
    "distribution": (
        "Exit distribution",
        "Fraction of samples leaving at each position (last: the original head) for the "
        "configurations Table II reports, on the search split (in-sample).",
    ),
}


def _cost_text(named: NamedCache) -> str:
    """The Inputs table's cost unit cell: the unit's name and where its costs come from."""
    from dyce_search.units import unit

    origin = f"profile {named.costs_source}" if named.costs_source else \
        "the cache's MACs" if named.costs is None else "a cost profile"
    return f"{unit(named.unit).label} ({origin})"


def _units_text(named) -> str:
    """``"MACs"`` or ``"latency (ms): resnet50; MACs: resnet18"``: which model uses which unit."""
    from dyce_search.units import unit

    by_unit: dict[str, list] = {}
    for n in named:
        by_unit.setdefault(n.unit, []).append(n.name)
    if len(by_unit) == 1:
        return unit(next(iter(by_unit))).label
    return "; ".join(f"{unit(u).label}: {', '.join(names)}" for u, names in by_unit.items())


def _index(output, named, held, options, results, methods, selected) -> str:
    out, sections, result_files = output.out, output.sections, output.results
    lam = np.asarray(options.lambdas, dtype=float)
    any_test = any(h.tested for h in held.values())
    lines = [
        "# DyCE analysis report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(source_date()))} by `python -m analysis`.",
        f"Searches: {lam.size} lambda values in [{lam.min():g}, {lam.max():g}], objective "
        f"`{options.objective}` (Eq. 12). Fronts and Table II: exact descent (`dyce_search.front`, "
        f"`dyce_search.cheapest`); the paper's methods in Fig. 5: threshold minimisation `{options.threshold}`.",
        "",
        "**Splits.** Every search runs on the *search split*; a figure or table measured there is labelled "
        "in-sample (biased upwards: the thresholds were fitted to those samples). "
        + ("Models with a test split are also measured on it, with 95% intervals, and `dyce_search.select` "
           f"certifies one configuration per Table II level on a separate validation split (δ = {options.delta:g}: "
           "each certified drop holds on unseen data with probability at least "
           f"{100 * (1 - options.delta):g}%)." if any_test else
           "No test split was given: every figure and table below is in-sample."),
        "",
        "## Inputs",
        "",
        "| model | role | source | dataset | split | samples | classes | early positions | exit types | original accuracy | front search | cost unit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(name, role, cache, source, seconds="-", cost="-"):
        md = cache.metadata
        acc = f"{100 * curves.head_accuracy(cache):.2f}%"
        return (f"| {name} | {role} | {source or '-'} | {md.get('dataset') or '-'} | {md.get('split') or '-'} | "
                f"{cache.n_samples:,} | {cache.num_classes} | {cache.n_positions} | {', '.join(cache.exit_types)} | "
                f"{acc} | {seconds} | {cost} |")

    for n in named:
        h = held[n.name]
        lines.append(row(n.name, "search", n.cache, n.source, format_seconds(curves.search_seconds(results[n.name])),
                         _cost_text(n)))
        if h.tested:
            lines.append(row(n.name, "validation (select)", h.validation, h.validation_source))
            lines.append(row(n.name, "test", h.test, h.test_source))
    from dyce_search.objective import reference_labels

    if any(not reference_labels(c.cache)[1] for c in named):
        lines += ["", "Caches without labels measure accuracy as agreement with the original head."]
    levels = ", ".join(tables.level_label(v) for v in options.levels)
    lines += [
        "",
        "## Table II: required cost for a given accuracy drop",
        "",
        f"Relative cost (C, Eq. 11, in the model's cost unit: {_units_text(named)}) of the cheapest configuration "
        f"whose accuracy drop relative to the original model (1 - A, Eq. 10) is at most {levels}. Rows by basis:",
        "",
        f"- *{tables.IN_SAMPLE_BASIS}*: `dyce_search.cheapest` (constrained exact descent, started from the "
        "front's configurations) chosen and measured on the search split.",
    ]
    if any_test:
        lines += [
            f"- *{tables.HELD_OUT_BASIS}*: among the front's configurations, the cheapest that meets the level "
            f"on the test split, with a 95% bootstrap interval ({options.n_boot} resamples of the test split). "
            "Chosen with hindsight: a lower bound on what the search split's configurations can deliver there.",
            f"- *{tables.certified_basis(options.delta)}*: the configuration `dyce_search.select` certified on the "
            "validation split, measured on the test split. \"no exit certified\" means the validation split "
            "could not support the level and the original model is the answer; \"exceeded on test\" marks "
            f"a level the test split violates (expected for at most δ = {options.delta:g} of such draws).",
        ]
    lines += [
        "",
        f"\"{tables.NOT_REACHED}\" means no configuration keeps the accuracy within that level.",
        "",
    ]
    for task, md, paths in output.tables:
        links = " · ".join(f"[{p.name}]({_rel(out, p)})" for p in paths)
        lines += [f"### {task}", "", md, links, ""]
    if selected:
        lines += ["### Certification", ""]
        for name, sel in selected.items():
            t = sel.table
            md = sel.metadata
            lines.append(f"- {name}: risk `{md['risk']}`, δ = {md['delta']:g}, {md['validation']['n_samples']:,} "
                         "validation samples; " + "; ".join(
                             f"drop ≤ {tables.level_label(r['target'])}: "
                             + ("no exit certified" if r["fallback"] else
                                f"bound {100 * r['risk_bound']:.2f}% (p = {r['p_value']:.3g})")
                             for _, r in t.iterrows()))
        lines += ["", "With n validation samples (for risk `accuracy`: those the original model classifies correctly) "
                  "no drop below 1 - δ^(1/n) can be certified, even by a configuration that never errs: "
                  + "; ".join(f"{name}: {100 * (1 - sel.metadata['delta'] ** (1 / max(1, _risk_samples(sel)))):.2f}%"
                              for name, sel in selected.items()) + ".", ""]
    lines += ["## Figures", ""]
    for key, entries in sections.items():
        if not entries:
            continue
        title, text = _SECTION_TEXT[key]
        lines += [f"### {title}", "", text, ""]
        for e in entries:
            png, pdf, csv, *more = e["paths"]
            extra = "".join(f" · [{p.stem.rsplit('-', 1)[-1]} data]({_rel(out, p)})" for p in more)
            lines += [f"**{e['title']}** ([PDF]({_rel(out, pdf)}) · [data]({_rel(out, csv)}){extra})", ""]
            if e["note"]:
                lines += [f"_{e['note']}_", ""]
            lines += [f"![{e['title']}]({_rel(out, png)})", ""]
    if not options.iterative:
        lines += ["_The iterative search was not run (`--no-iterative`)._", ""]
    lines += ["## Search results", "", "Load with `dyce_search.load_result(path)`.", ""]
    for p in result_files:
        lines.append(f"- [{_rel(out, p)}]({_rel(out, p)})")
    lines += ["", "Search times (all lambdas):", ""]
    for name, r in methods.items():
        lines.append(f"- {name} on {named[options.compare_on].name}: {format_seconds(curves.search_seconds(r))}")
    return "\n".join(lines) + "\n"
