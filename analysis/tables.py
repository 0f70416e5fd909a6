"""Table II: the least relative cost that keeps the accuracy drop within given levels.

The paper's Table II lists, per base model, the smallest MACs (relative to the
original model, C of Eq. 11) among the searched configurations whose accuracy
drop, relative to the original model, is at most 5 %, 2 % and 0.5 %. With A
the relative accuracy of Eq. 10, the drop of a configuration is ``1 - A``.
Costs are in the unit the search used (``unit`` column: MACs by default, or
a cost profile's, e.g. latency in ms), and the printed table names it
("latency at drop ≤ 2.0%"). A level that no configuration reaches is
reported as "not reached" (NaN in the numeric frames), never as zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dyce_search import ResultError

#: The drop levels of the paper's Table II, as fractions.
PAPER_LEVELS = (0.05, 0.02, 0.005)
NOT_REACHED = "not reached"
# A relative accuracy computed as n_correct / (M A_ori) can land a rounding
# step below 1 - level for a configuration that exactly meets it.
_TOLERANCE = 1e-12


def _check_levels(levels) -> tuple[float, ...]:
    out = []
    for level in levels:
        value = float(level)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"accuracy drop levels must be in [0, 1), got {level!r}")
        out.append(value)
    if not out:
        raise ValueError("at least one accuracy drop level is needed")
    return tuple(out)


def level_label(level: float) -> str:
    """Column label of a drop level, e.g. ``0.005 -> "0.5%"``."""
    return f"{100 * level:.1f}%"


def required_cost(table: pd.DataFrame, levels: Sequence[float] = PAPER_LEVELS) -> pd.DataFrame:
    """For each drop level, the cheapest configuration with ``1 - rel_accuracy <= level``.

    Parameters
    ----------
    table : DataFrame
        A search result table with at least ``rel_cost`` (C, Eq. 11) and
        ``rel_accuracy`` (A, Eq. 10); ``lambda`` and ``accuracy`` are carried
        along when present.
    levels : sequence of float
        Allowed relative accuracy drops as fractions (default 5 %, 2 %, 0.5 %).

    Returns
    -------
    DataFrame
        One row per level: ``level``, ``reached`` (bool), ``rel_cost``,
        ``rel_accuracy``, ``accuracy``, ``lambda`` and ``row`` (position of
        the chosen row in ``table``, -1 if not reached). Values are NaN where
        the level is not reached. Ties in ``rel_cost`` go to the more accurate
        configuration.
    """
    levels = _check_levels(levels)
    missing = [c for c in ("rel_cost", "rel_accuracy") if c not in table.columns]
    if missing:
        raise ResultError(f"table lacks column(s) {missing} needed for Table II")
    cost = table["rel_cost"].to_numpy(float)
    rel_acc = table["rel_accuracy"].to_numpy(float)
    acc = table["accuracy"].to_numpy(float) if "accuracy" in table else np.full(len(table), np.nan)
    lam = table["lambda"].to_numpy(float) if "lambda" in table else np.full(len(table), np.nan)
    rows = []
    for level in levels:
        ok = np.flatnonzero((1.0 - rel_acc <= level + _TOLERANCE) & np.isfinite(cost))
        if ok.size == 0:
            rows.append(dict(level=level, reached=False, rel_cost=np.nan, rel_accuracy=np.nan,
                             accuracy=np.nan, **{"lambda": np.nan}, row=-1))
            continue
        i = int(ok[np.lexsort((-rel_acc[ok], cost[ok]))[0]])
        rows.append(dict(level=level, reached=True, rel_cost=cost[i], rel_accuracy=rel_acc[i],
                         accuracy=acc[i], **{"lambda": lam[i]}, row=i))
    return pd.DataFrame(rows, columns=["level", "reached", "rel_cost", "rel_accuracy", "accuracy", "lambda", "row"])


def table_ii(results: Mapping, levels: Sequence[float] = PAPER_LEVELS) -> pd.DataFrame:
    """Table II for several searched models (long form).

    Parameters
    ----------
    results : mapping of str to SearchResult
        Model name -> its search result. All must classify the same number of
        classes (one table compares base models on one task).
    levels : sequence of float

    Returns
    -------
    DataFrame
        :func:`required_cost` for every model with ``model``,
        ``base_accuracy`` (A_ori), ``total_cost`` (the original model's cost)
        and ``unit`` (of ``total_cost`` and ``rel_cost``) columns in front.

    Raises
    ------
    ResultError
        If the results disagree on ``num_classes`` or none are given.
    """
    from .curves import base_accuracy

    if not results:
        raise ResultError("Table II needs at least one search result")
    classes = {str(name): r.metadata.get("num_classes") for name, r in results.items()}
    if len({c for c in classes.values()}) > 1:
        listing = ", ".join(f"{n}: {c}" for n, c in classes.items())
        raise ResultError(f"cannot compare models with different class counts in one Table II ({listing})")
    frames = []
    for name, result in results.items():
        f = required_cost(result.table.reset_index(drop=True), levels)
        f.insert(0, "model", str(name))
        f.insert(1, "base_accuracy", base_accuracy(result))
        f.insert(2, "total_cost", result.original_cost)
        f.insert(3, "unit", result.unit)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def held_out_levels(result, cache, levels: Sequence[float] = PAPER_LEVELS, n_boot: int = 1000, seed: int = 0,
                    confidence: float = 0.95) -> pd.DataFrame:
    """Table II on another split: for each level, the cheapest configuration of ``result`` that meets it *there*.

    The configurations were searched on one split; their drop and cost are
    measured on ``cache`` (e.g. the test split), the original model (no
    early exit, drop 0, cost 1) included, so every level is met. The level's
    relative cost (C, Eq. 11, in the search's unit) gets a percentile bootstrap interval: the test samples are
    resampled ``n_boot`` times and the level recomputed each time.

    Returns
    -------
    DataFrame
        One row per level: ``level``, ``reached`` (always True),
        ``rel_cost``, ``low``, ``high``, ``rel_accuracy``, ``accuracy``,
        ``lambda``, ``row`` (-1 for the original model) and
        ``accuracy_low`` / ``accuracy_high`` (exact binomial interval).
    """
    from dyce_search.evaluation import simulate
    from dyce_search.objective import reference

    levels = _check_levels(levels)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    ref = reference(cache)
    result.check_cache(cache)
    costs = result._stored_costs(cache)
    M = cache.n_samples
    correct = np.empty((M, len(result) + 1), np.float32)
    cost = np.empty((M, len(result) + 1), np.float64)
    for j, config in enumerate(result.configs):
        sim = simulate(cache, config, costs)
        correct[:, j] = sim.correct
        cost[:, j] = sim.cost
    correct[:, -1] = ref.head_correct
    cost[:, -1] = costs.total
    head = ref.head_correct.astype(np.float64)
    total = costs.total
    lam = np.append(result.table["lambda"].to_numpy(float), np.nan)
    rows_index = np.append(np.arange(len(result)), -1)

    def levels_for(weights):
        """[n_levels, B] cheapest feasible relative cost under bootstrap weights [B, M]."""
        n_correct = weights @ correct
        n_head = weights @ head
        rel_cost = (weights @ cost) / (weights.sum(axis=1, keepdims=True) * total)
        with np.errstate(invalid="ignore", divide="ignore"):
            drop = 1.0 - n_correct / n_head[:, None]
        out = np.empty((len(levels), weights.shape[0]))
        for i, level in enumerate(levels):
            out[i] = np.where(drop <= level + _TOLERANCE, rel_cost, np.inf).min(axis=1)
        return out, drop, rel_cost

    observed, drop, rel_cost = levels_for(np.ones((1, M)))
    rng = np.random.default_rng(seed)
    boot = []
    for start in range(0, n_boot, 100):
        b = min(100, n_boot - start)
        weights = np.stack([np.bincount(rng.integers(0, M, M), minlength=M) for _ in range(b)]).astype(np.float64)
        boot.append(levels_for(weights)[0])
    boot = np.concatenate(boot, axis=1)
    alpha = 1.0 - confidence
    rows = []
    for i, level in enumerate(levels):
        j = int(np.flatnonzero(rel_cost[0] == observed[i, 0])[0])
        rows.append(dict(level=level, reached=True, rel_cost=float(observed[i, 0]),
                         low=float(np.quantile(boot[i], alpha / 2)), high=float(np.quantile(boot[i], 1 - alpha / 2)),
                         rel_accuracy=float(1.0 - drop[0, j]), accuracy=float(correct[:, j].mean()),
                         **{"lambda": lam[j]}, row=int(rows_index[j])))
    out = pd.DataFrame(rows, columns=["level", "reached", "rel_cost", "low", "high", "rel_accuracy", "accuracy",
                                      "lambda", "row"])
    return _with_accuracy_interval(out, M, confidence)


def _with_accuracy_interval(frame: pd.DataFrame, n_samples: int, confidence: float = 0.95) -> pd.DataFrame:
    """``accuracy_low`` / ``accuracy_high``: exact binomial interval of each row's ``accuracy`` on ``n_samples``."""
    from .curves import with_intervals

    return with_intervals(frame, n_samples, confidence)


def certified_levels(selected, cache) -> pd.DataFrame:
    """The configurations :func:`dyce_search.select` certified, measured on another split (e.g. the test split).

    Returns
    -------
    DataFrame
        One row per certified level: ``level``, ``reached`` (True),
        ``rel_cost``, ``rel_accuracy`` and ``accuracy`` on ``cache`` (with
        ``accuracy_low`` / ``accuracy_high``, exact binomial), ``held`` (the drop
        on ``cache`` is within the level), ``fallback`` and ``risk_bound``.
    """
    table = selected.table
    if "target" not in table or "fallback" not in table:
        raise ResultError("not a result of dyce_search.select: no target/fallback columns")
    measured = selected.evaluate(cache)
    drop = 1.0 - measured["rel_accuracy"].to_numpy(float)
    out = pd.DataFrame({
        "level": table["target"].to_numpy(float),
        "reached": True,
        "rel_cost": measured["rel_cost"].to_numpy(float),
        "rel_accuracy": measured["rel_accuracy"].to_numpy(float),
        "accuracy": measured["accuracy"].to_numpy(float),
        "held": drop <= table["target"].to_numpy(float) + _TOLERANCE,
        "fallback": table["fallback"].to_numpy(bool),
        "risk_bound": table["risk_bound"].to_numpy(float),
    })
    return _with_accuracy_interval(out, cache.n_samples)


#: ``basis`` of Table II rows chosen and measured on the search split.
IN_SAMPLE_BASIS = "search split (in-sample)"
#: ``basis`` of rows chosen and measured on the test split among the searched configurations.
HELD_OUT_BASIS = "test split (best in hindsight)"


def certified_basis(delta: float) -> str:
    """``basis`` of rows :func:`dyce_search.select` certified on a validation split, measured on the test split."""
    return f"certified (δ = {delta:g}), on test split"


def table_ii_held_out(name: str, searched, front, selected, test, levels: Sequence[float] = PAPER_LEVELS,
                      n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Table II of one model three ways: in-sample, on the test split, and certified.

    Parameters
    ----------
    name : str
        Model name (``model`` column).
    searched : SearchResult
        Table II search on the search split (e.g. :func:`dyce_search.cheapest`).
    front : SearchResult
        Candidates of the held-out rows (e.g. :func:`dyce_search.front`).
    selected : SearchResult
        :func:`dyce_search.select` of ``front`` at ``levels`` on a validation split.
    test : ExitCache
        The test split: neither searched nor used by ``select``.

    Returns
    -------
    DataFrame
        Long form, one row per basis and level: ``model``, ``basis``
        (:data:`IN_SAMPLE_BASIS`, :data:`HELD_OUT_BASIS`,
        :func:`certified_basis`), ``base_accuracy`` (A_ori on the split the
        row is measured on), ``total_cost``, ``unit`` and the columns of
        :func:`required_cost`, :func:`held_out_levels` (``low``/``high``:
        bootstrap interval) and :func:`certified_levels` (``held``,
        ``fallback``, ``risk_bound``); NaN where a column does not apply.
    """
    from .curves import head_accuracy

    levels = _check_levels(levels)
    delta = selected.metadata.get("delta")
    if delta is None:
        raise ResultError("selected is not a result of dyce_search.select (no delta in its metadata)")
    if sorted(selected.table["target"].to_numpy(float)) != sorted(levels):
        raise ResultError(f"selected certifies levels {list(selected.table['target'])}, Table II needs {list(levels)}")
    in_sample = table_ii({name: searched}, levels).assign(basis=IN_SAMPLE_BASIS)
    a_test = head_accuracy(test)
    units = {what: r.unit for what, r in (("searched", searched), ("front", front), ("selected", selected))}
    if len(set(units.values())) > 1:
        raise ResultError(f"Table II of {name!r} mixes cost units {units}; search all three with one cost profile")
    total, unit = searched.original_cost, searched.unit
    held = held_out_levels(front, test, levels, n_boot=n_boot, seed=seed).assign(
        model=name, basis=HELD_OUT_BASIS, base_accuracy=a_test, total_cost=total, unit=unit)
    certified = certified_levels(selected, test).assign(
        model=name, basis=certified_basis(float(delta)), base_accuracy=a_test, total_cost=total, unit=unit)
    out = pd.concat([in_sample, held, certified], ignore_index=True)
    first = ["model", "basis", "base_accuracy", "total_cost", "unit"]
    return out[first + [c for c in out.columns if c not in first]]


def table_ii_wide(long: pd.DataFrame) -> pd.DataFrame:
    """The printed Table II: one row per model (and basis), one column per level, as text.

    Cells read like ``"64.1%"`` (C, Eq. 11), ``"64.1% [58.2–70.3]"``
    where the row has a bootstrap interval, ``"100.0% (no exit certified)"``
    for a certified row that fell back to the original model, with
    ``" — exceeded on test"`` appended where a certified drop did not hold on
    the test split, or ``"not reached"``. The ``base accuracy`` column gives
    A_ori in percent on the split the row is measured on; a ``basis`` column
    appears when ``long`` has one. Level columns are named after the cost
    unit, e.g. ``"MACs at drop ≤ 2.0%"``, ``"latency at drop ≤ 2.0%"``.

    Raises
    ------
    ResultError
        If ``long`` has no ``unit`` column or mixes units (one column, one unit).
    """
    from dyce_search.units import unit

    from .curves import frame_unit

    quantity = unit(frame_unit(long, "Table II rows")).quantity
    keys = ["model", "basis"] if "basis" in long else ["model"]
    levels = list(dict.fromkeys(long["level"]))
    rows = []
    for key, g in long.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        row["base accuracy"] = f"{100 * g['base_accuracy'].iloc[0]:.2f}%"
        by_level = g.set_index("level")
        for level in levels:
            row[f"{quantity} at drop ≤ {level_label(level)}"] = _cost_cell(by_level.loc[level]) \
                if level in by_level.index else ""
        rows.append(row)
    out = pd.DataFrame(rows).set_index("model")
    return out


def _cost_cell(r) -> str:
    if not bool(r["reached"]):
        return NOT_REACHED
    text = f"{100 * r['rel_cost']:.1f}%"
    low, high = r.get("low", np.nan), r.get("high", np.nan)
    if pd.notna(low) and pd.notna(high):
        text += f" [{100 * low:.1f}–{100 * high:.1f}]"
    if pd.notna(r.get("fallback", np.nan)) and bool(r["fallback"]):
        text += " (no exit certified)"
    if pd.notna(r.get("held", np.nan)) and not bool(r["held"]):
        text += " — exceeded on test"
    return text


def to_markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured Markdown table of a small text/number frame (no extra dependency)."""
    cols = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for key, row in frame.iterrows():
        cells = ([str(key)] if index else []) + [_cell(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def rows_at_levels(result, levels: Sequence[float] = PAPER_LEVELS) -> tuple[list[int], list[str]]:
    """Configurations to inspect: the Table II choice at each reached drop level.

    Levels that select the same configuration are merged. If no level is
    reached, the most accurate configuration on the Pareto front is used so
    that there is always something to show.

    Returns
    -------
    rows : list of int
        Row indices into ``result.table`` / ``result.configs``.
    labels : list of str
        e.g. ``"drop ≤ 2.0%: 70.8% MACs"`` (``"70.8% latency"`` for a latency profile).
    """
    from dyce_search.units import unit

    from .curves import tradeoff_curve

    quantity = unit(result.unit).quantity
    table = result.table.reset_index(drop=True)
    chosen = required_cost(table, levels)
    levels_of: dict[int, list[float]] = {}
    cost_of: dict[int, float] = {}
    for _, r in chosen[chosen["reached"]].iterrows():
        levels_of.setdefault(int(r["row"]), []).append(float(r["level"]))
        cost_of[int(r["row"])] = float(r["rel_cost"])
    rows = list(levels_of)
    labels = [
        f"drop ≤ {' / '.join(level_label(v) for v in levels_of[row])}: {100 * cost_of[row]:.1f}% {quantity}" for row in rows
    ]
    if not rows:
        front = tradeoff_curve(result, pareto=True)
        if front.empty:
            raise ResultError("the search result has no configuration with finite cost and accuracy")
        best = front.iloc[-1]
        rows.append(int(best["row"]))
        drop = 100 * (1 - best["rel_accuracy"])
        labels.append(f"most accurate: {100 * best['rel_cost']:.1f}% {quantity}, drop {drop:.1f}%")
    return rows, labels
