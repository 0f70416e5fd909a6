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
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dyce_search import CacheError

from . import curves, tables
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
PNG_DPI = 200


@dataclass
class NamedCache:
    """A cache with the name it carries in legends and file names."""

    name: str
    cache: object
    source: str = ""

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
    progress: bool = True


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


def task_key(cache) -> tuple:
    """Caches with the same key are compared in one Fig. 4 and Table II."""
    return (cache.metadata.get("dataset") or "unknown dataset", int(cache.num_classes))


# ---------------------------------------------------------------------- I/O


def _write_bytes(path: Path, data: bytes) -> Path:
    from dyce_search._io import write_bytes_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    return path


def _write_text(path: Path, text: str) -> Path:
    return _write_bytes(path, text.encode("utf-8"))


def save_figure(display, out: Path, stem: str) -> list[Path]:
    """Save a plotted display as ``figures/<stem>.png`` and ``.pdf`` and its data as ``data/<stem>.csv``."""
    import matplotlib.pyplot as plt

    paths = []
    for ext, kw in (("png", {"dpi": PNG_DPI}), ("pdf", {})):
        buf = io.BytesIO()
        display.figure_.savefig(buf, format=ext, **kw)
        paths.append(_write_bytes(out / "figures" / f"{stem}.{ext}", buf.getvalue()))
    plt.close(display.figure_)
    paths.append(_write_text(out / "data" / f"{stem}.csv", display.frame.to_csv(index=False)))
    return paths


# ----------------------------------------------------------------- pipeline


def check_inputs(caches: Sequence[NamedCache], tests: Sequence, options: ReportOptions) -> None:
    """Fail before any search: every test cache must match its calibration cache, options in range.

    Raises
    ------
    CacheError
        Naming the cache pair and what differs.
    ValueError
        For a bad option (lambdas outside [0, 1], ``compare_on`` out of range, ...).
    """
    if not caches:
        raise CacheError("no caches given")
    if len(tests) > len(caches):
        raise CacheError(f"{len(tests)} test caches for {len(caches)} caches (--test pairs with the caches in order)")
    for named, test in zip(caches, tests):
        if test is not None:
            try:
                curves.check_same_model(named.cache, test)
            except CacheError as e:
                raise CacheError(f"test cache for {named.name!r}: {e}") from None
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


def build_report(caches, out, test_caches=None, options: ReportOptions | None = None) -> Report:
    """Run the searches and write every figure, table and the index into ``out``.

    Parameters
    ----------
    caches : sequence of ExitCache or NamedCache
        Calibration caches (the searches run on these).
    out : path
        Output folder (created once the inputs are checked).
    test_caches : sequence of ExitCache or NamedCache, optional
        Paired with ``caches`` in order for the generalisation figure (the
        names of NamedCache test caches are ignored, their sources shown).
    options : ReportOptions, optional

    Returns
    -------
    Report

    Raises
    ------
    CacheError
        If a test cache does not match its calibration cache (before anything is written).
    ResultError
        If results cannot be compared.
    """
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only; never open a window

    options = options or ReportOptions()
    if all(isinstance(c, NamedCache) for c in caches):
        named = list(caches)
    else:
        named = name_caches([c.cache if isinstance(c, NamedCache) else c for c in caches])
    tests = list(test_caches or [])
    test_sources = [t.source if isinstance(t, NamedCache) else "" for t in tests]
    tests = [t.cache if isinstance(t, NamedCache) else t for t in tests]
    check_inputs(named, tests, options)
    tests += [None] * (len(named) - len(tests))
    test_sources += [""] * (len(named) - len(test_sources))

    groups: dict[tuple, list[NamedCache]] = {}
    for n in named:
        groups.setdefault(task_key(n.cache), []).append(n)
    n_steps = (
        5 * len(named)  # front, Table II search, Fig. 3, Fig. 6 (with its ablation front), exit distribution
        + sum(t is not None for t in tests)
        + 2 * len(groups)  # Fig. 4, Table II
        + 2  # Fig. 5: the paper's methods, plot
    )
    output = _Output(Path(out))
    output.out.mkdir(parents=True, exist_ok=True)
    step = _Steps(n_steps, options.progress)
    try:
        results, targets = _searches(named, options, output, step)
        _fig3(named, options, output, step)
        _fig4_and_table_ii(groups, results, targets, options.levels, output, step)
        methods = _fig5(named[options.compare_on], results, options, output, step)
        _fig6(named, results, options, output, step)
        _generalisation(named, tests, results, output, step)
        _exit_distribution(named, targets, options, output, step)
    finally:
        step.close()
    index = _write_text(
        output.out / "README.md",
        _index(output, named, list(zip(tests, test_sources)), options, results, methods),
    )
    return Report(out=output.out, index=index, files=sorted(set(output.files()) | {index}))


def _run_options(options: ReportOptions) -> dict:
    return dict(objective=options.objective, progress=False)


def _searches(named, options, output, step) -> tuple[dict, dict]:
    """The dense front of every cache (Figs. 4, 6, generalisation) and Table II by :func:`dyce_search.cheapest`."""
    from dyce_search import METHODS, cheapest, front, run

    # Compile (or load from numba's cache) every kernel on a few lambdas first,
    # so the search times the report quotes are the searches', not the compiler's.
    warm = named[0].cache
    for name, method in METHODS.items():
        run(warm, [0.5], method=name, threshold=method.thresholds[-1], **_run_options(options))
    cheapest(warm, [0.05], lambdas=[0.0, 1.0], **_run_options(options))

    results, targets = {}, {}
    for n in named:
        step(f"front: {n.name}")
        results[n.name] = front(n.cache, lambdas=options.lambdas, **_run_options(options))
        output.result(results[n.name], f"{n.slug}-front")
        step.done()
        step(f"Table II search: {n.name}")
        # the front already holds every non-dominated configuration of the fine sweep: a
        # coarse seeding grid (for the bisection brackets) is enough next to it
        targets[n.name] = cheapest(n.cache, options.levels, lambdas=TABLE_II_LAMBDAS, starts=results[n.name],
                                   **_run_options(options))
        output.result(targets[n.name], f"{n.slug}-table2")
        step.done()
    return results, targets


def _fig3(named, options, output, step) -> None:
    for n in named:
        step(f"Fig. 3: {n.name}")
        d = ThresholdCurveDisplay.from_cache(n.cache, options.threshold_position, options.threshold_exit_type).plot()
        a = d.frame.attrs
        output.figure("fig3", f"{n.name}: exit {a['exit_type']} at position {a['position']}",
                      f"fig3-threshold-{n.slug}", d)
        step.done()


def _fig4_and_table_ii(groups, results, targets, levels, output, step) -> None:
    """One Fig. 4 and one Table II per task: accuracies of different tasks do not compare."""
    import matplotlib.pyplot as plt

    for (dataset, n_classes), members in groups.items():
        suffix = "" if len(groups) == 1 else f"-{slugify(dataset)}-{n_classes}"
        task = f"{dataset}, {n_classes} classes"
        group = {n.name: results[n.name] for n in members}
        step(f"Fig. 4: {task}")
        d = TradeoffDisplay.from_results(group, title=f"DyCE trade-off ({task})")
        if len(group) > 1:
            # relative MACs put every original model at 100%; absolute MACs show how backbones compare
            fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained", sharey=True)
            d.plot(ax=right, x="absolute")
            right.set_title("absolute MACs", fontsize="medium")
            right.set_ylabel("")
            right.get_legend().remove()  # the left panel's legend covers both
            d.plot(ax=left)
            left.set_title("relative MACs", fontsize="medium")
            fig.suptitle(d.title)
        else:
            d.plot()
        output.figure("fig4", task, f"fig4-tradeoff{suffix}", d)
        step.done()

        step(f"Table II: {task}")
        long = tables.table_ii({n.name: targets[n.name] for n in members}, levels)
        wide = tables.table_ii_wide(long)
        md = tables.to_markdown(wide)
        paths = [
            _write_text(output.out / "tables" / f"table2{suffix}.csv", wide.to_csv()),
            _write_text(output.out / "tables" / f"table2{suffix}.md", md),
            _write_text(output.out / "tables" / f"table2-long{suffix}.csv", long.to_csv(index=False)),
        ]
        output.tables.append((task, md, paths))
        step.done()


def _fig5(compare, results, options, output, step) -> dict:
    """Every search method on one cache; returns label -> SearchResult."""
    from dyce_search import METHODS

    step(f"Fig. 5 searches: {compare.name}")
    descent = results[compare.name]
    methods = method_curves(
        compare.cache, options.lambdas, threshold=options.threshold,
        skip=() if options.iterative else ("iterative",),
        given={"descent": (f"{METHODS['descent'].label} (front)", descent)}, **_run_options(options),
    )
    for label, result in methods.items():
        if result is not descent:
            output.result(result, f"{compare.slug}-{slugify(label)}")
    step.done()
    step("Fig. 5")
    d = MethodComparisonDisplay.from_results(methods, title=f"{compare.name}: search methods").plot()
    output.figure("fig5", compare.name, f"fig5-methods-{compare.slug}", d)
    step.done()
    return methods


def _fig6(named, results, options, output, step) -> None:
    from dyce_search import front

    k = options.disabled
    for n in named:
        step(f"Fig. 6: {n.name}")
        searched = {"ensemble (all positions)": results[n.name]}
        note = ""
        if 0 < k < n.cache.n_positions:
            searched[f"ensemble, first {k} positions disabled"] = front(
                n.cache, lambdas=options.lambdas, positions=list(range(k, n.cache.n_positions)),
                **_run_options(options),
            )
        elif k:
            note = f"ablation skipped: the cache has only {n.cache.n_positions} early positions"
        d = EnsembleDisplay.from_results(n.cache, searched, title=f"{n.name}: ensemble vs standalone exits").plot()
        output.figure("fig6", n.name, f"fig6-ensemble-{n.slug}", d, note)
        step.done()


def _generalisation(named, tests, results, output, step) -> None:
    for n, test in zip(named, tests):
        if test is None:
            continue
        step(f"generalisation: {n.name}")
        d = GeneralisationDisplay.from_result(results[n.name], test, n.cache,
                                              title=f"{n.name}: calibration vs test").plot()
        output.figure("generalisation", n.name, f"generalisation-{n.slug}", d)
        step.done()


def _exit_distribution(named, targets, options, output, step) -> None:
    for n in named:
        step(f"exit distribution: {n.name}")
        d = ExitDistributionDisplay.from_result(targets[n.name], n.cache, levels=options.levels,
                                                title=f"{n.name}: where samples exit").plot()
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
        "original model's accuracy.",
    ),
    "fig4": (
        "Fig. 4: accuracy vs relative MACs",
        "Dense non-dominated front of each backbone (`dyce_search.front`: the descent over all "
        "lambdas merged with the cheapest configuration for every accuracy level it met); stars are "
        "the original models (100% MACs). Accuracy is absolute so backbones compare. A configuration "
        "offers its accuracy at any budget at or above its cost, so fronts are drawn as steps.",
    ),
    "fig5": (
        "Fig. 5: search methods",
        "Every search method on one cache: the descent's dense front, the paper's iterative "
        "(Algorithm 2) and single-pass (Algorithm 3) searches, and the baseline that uses one exit "
        "type everywhere with one shared threshold (the best type), each the Pareto front of its "
        "lambda sweep, drawn as steps; legends give each search's total time.",
    ),
    "fig6": (
        "Fig. 6: ensemble vs standalone exits",
        "Each dot is one exit used alone with threshold 0 (every sample leaves there), dashed "
        "lines join the positions of one exit type; solid lines are the dense fronts of searched "
        "ensembles, with and without the first positions.",
    ),
    "generalisation": (
        "Generalisation: calibration vs test",
        "Configurations on the calibration split's dense front, evaluated unchanged on the test split.",
    ),
    "distribution": (
        "Exit distribution",
        "Fraction of samples leaving at each position (last: the original head) for the "
        "configurations Table II reports.",
    ),
}


def _index(output, named, tests, options, results, methods) -> str:
    out, sections, result_files = output.out, output.sections, output.results
    lam = np.asarray(options.lambdas, dtype=float)
    lines = [
        "# DyCE analysis report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `python -m analysis`.",
        f"Searches: {lam.size} lambda values in [{lam.min():g}, {lam.max():g}], objective "
        f"`{options.objective}` (Eq. 12). Fronts and Table II: exact descent (`dyce_search.front`, "
        f"`dyce_search.cheapest`); the paper's methods in Fig. 5: threshold minimisation `{options.threshold}`. "
        "Every figure and table is measured on the split the search ran on (in-sample) unless it says test.",
        "",
        "## Inputs",
        "",
        "| model | source | dataset | split | samples | classes | early positions | exit types | original accuracy | front search |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, (test, test_source) in zip(named, tests):
        c, md = n.cache, n.cache.metadata
        seconds = format_seconds(curves.search_seconds(results[n.name]))
        acc = f"{100 * curves.head_accuracy(c):.2f}%"
        lines.append(
            f"| {n.name} | {n.source or '-'} | {md.get('dataset') or '-'} | {md.get('split') or '-'} | "
            f"{c.n_samples:,} | {c.num_classes} | {c.n_positions} | {', '.join(c.exit_types)} | {acc} | {seconds} |"
        )
        if test is not None:
            lines.append(
                f"| {n.name} (test) | {test_source or '-'} | {test.metadata.get('dataset') or '-'} | {test.metadata.get('split') or '-'} | "
                f"{test.n_samples:,} | {test.num_classes} | {test.n_positions} | {', '.join(test.exit_types)} | "
                f"{100 * curves.head_accuracy(test):.2f}% | - |"
            )
    from dyce_search.objective import reference_labels

    if any(not reference_labels(c.cache)[1] for c in named):
        lines += ["", "Caches without labels measure accuracy as agreement with the original head."]
    levels = ", ".join(tables.level_label(v) for v in options.levels)
    lines += [
        "",
        "## Table II: required MACs for a given accuracy drop",
        "",
        f"Relative MACs of the cheapest configuration whose accuracy drop relative to the original model "
        f"(1 - A, Eq. 10) is at most {levels}, found by `dyce_search.cheapest` (constrained exact descent, "
        f"started from the front's configurations) on the search split. \"{tables.NOT_REACHED}\" means no "
        "configuration keeps the accuracy within that level.",
        "",
    ]
    for task, md, paths in output.tables:
        links = " · ".join(f"[{p.name}]({_rel(out, p)})" for p in paths)
        lines += [f"### {task}", "", md, links, ""]
    lines += ["## Figures", ""]
    for key, entries in sections.items():
        if not entries:
            continue
        title, text = _SECTION_TEXT[key]
        lines += [f"### {title}", "", text, ""]
        for e in entries:
            png, pdf, csv = e["paths"]
            lines += [f"**{e['title']}** ([PDF]({_rel(out, pdf)}) · [data]({_rel(out, csv)}))", ""]
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
