"""Per-figure data as DataFrames, computed from exit caches and search results.

Every function here is pure: it reads an :class:`~dyce_search.ExitCache` or a
:class:`~dyce_search.SearchResult` and returns numbers; plotting lives in
:mod:`analysis.displays`. Accuracies are fractions in [0, 1], costs are
relative to the original model (``rel_cost``, 1.0 = the whole model, the
paper's C of Eq. 11) unless a column says otherwise; ``cost`` is the mean
cost per sample in the unit of the ``unit`` column (MACs, or that of a cost
profile such as a latency profile in ms; :mod:`dyce_search.units`).

Notation: P early positions ``p = 0..P-1`` (the paper's n = 1..N-1) and the
original head at position P (the paper's N).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from dyce_search import CacheError, ResultError

#: Columns of a result table that the curve functions keep.
CURVE_COLUMNS = ("lambda", "rel_cost", "rel_accuracy", "accuracy", "cost", "unit")


# --------------------------------------------------------------------- helpers


def _truth(cache) -> tuple[np.ndarray, bool]:
    """Reference classes (labels, or the head's predictions if any label is unknown)."""
    from dyce_search.objective import reference_labels

    return reference_labels(cache)


def _relative_exit_costs(cache, costs=None) -> tuple[np.ndarray, np.ndarray]:
    """Relative cost of running the backbone up to each position, and of each exit.

    Returns
    -------
    upto : float64 [P + 1]
        sum_{n' <= n} S_{n'}: backbone cost up to early position p (index P = the whole model, 1.0).
    exit : float64 [P, K]
        Delta_{n,k}: relative cost of exit (p, k), 0 where absent.
    """
    from dyce_search import Costs

    costs = Costs.from_cache(cache) if costs is None else costs.check(cache)
    segment, delta = costs.normalized()
    return np.cumsum(segment), delta


def largest_exit_type(cache, position: int) -> int:
    """The available exit type with the most MACs at ``position`` (ties: the later type)."""
    available = np.flatnonzero(cache.available[position])
    if available.size == 0:
        raise CacheError(f"no exit is available at position {cache.positions[position]!r}")
    macs = cache.exit_macs[position, available]
    return int(available[::-1][np.argmax(macs[::-1])])


def head_accuracy(cache) -> float:
    """A_ori as the searches define it (Eq. 10): :func:`dyce_search.objective.head_accuracy`."""
    from dyce_search.objective import head_accuracy as a_ori

    return a_ori(cache)


def base_accuracy(result) -> float:
    """A_ori of the cache a search result was computed on.

    Read from ``metadata["head_accuracy"]`` when the result records it, else
    recovered from any row as ``accuracy / rel_accuracy``, which is exact
    because both columns count the same correct predictions (Eq. 10).

    Raises
    ------
    ResultError
        If the result records neither.
    """
    value = result.metadata.get("head_accuracy")
    if value is not None:
        return float(value)
    table = result.table
    ok = table["rel_accuracy"].to_numpy(float) > 0
    if not ok.any():
        raise ResultError("cannot recover the original model's accuracy: no row has rel_accuracy > 0")
    i = int(np.flatnonzero(ok)[0])
    return float(table["accuracy"].iloc[i] / table["rel_accuracy"].iloc[i])


def frame_unit(frame: pd.DataFrame, what: str = "the curves") -> str:
    """The one cost unit of ``frame``'s ``unit`` column.

    One axis or one table column shows one unit: curves of several units
    are refused rather than drawn on a shared axis (draw each unit on its
    own, as :mod:`analysis.report` does).

    Raises
    ------
    ResultError
        If the column is missing or holds several units (naming the series of each).
    """
    from dyce_search.units import DEFAULT_UNIT

    if "unit" not in frame.columns:
        raise ResultError(f"{what} have no 'unit' column: the cost unit of rel_cost/cost is unknown")
    units = list(dict.fromkeys(frame["unit"].dropna()))
    if len(units) > 1:
        key = next((c for c in ("name", "series", "model") if c in frame.columns), None)
        shown = "; ".join(
            f"{u!r}: {sorted(map(str, set(frame.loc[frame['unit'] == u, key])))}" if key else repr(u) for u in units)
        raise ResultError(f"{what} mix cost units ({shown}); costs of different units cannot share an axis or a "
                          "column, show each unit separately")
    # an empty frame has no cost to label; its axis reads as the default unit's
    return str(units[0]) if units else DEFAULT_UNIT


# ------------------------------------------------------------------- Fig. 3


#: Quantile of an exit's confidences where Fig. 3's default threshold range starts: confidences
#: cluster (near 1 at deep exits, near 1/C at shallow ones), and a range from 0 would spend most
#: of the figure where the curves are flat; at this quantile 99 % of the samples still exit.
RANGE_QUANTILE = 0.01
#: High thresholds whose sample counts Fig. 3 prints on its tail (those inside the drawn range).
TAIL_THRESHOLDS = (0.9, 0.99, 0.999)
#: Shares of the samples whose thresholds mark the tail instead when no TAIL_THRESHOLDS lies on the
#: axis (shallow exits, few classes): where 1 % and 0.1 % of the samples remain.
TAIL_SHARES = (0.01, 0.001)


def _exit(cache, position, exit_type) -> tuple[int, int]:
    """(p, k) of an available exit; exit type None picks the largest at ``position``."""
    p = cache.position_index(position)
    k = largest_exit_type(cache, p) if exit_type is None else cache.exit_type_index(exit_type)
    if not cache.available[p, k]:
        raise CacheError(f"exit type {cache.exit_types[k]!r} is not available at position {cache.positions[p]!r}")
    return p, k


def confidence_range(cache, position=0, exit_type=None, quantile=RANGE_QUANTILE) -> tuple[float, float]:
    """Threshold range where exit (p, k)'s confidences max(y~_{p,k}) actually are (Fig. 3's x-axis).

    From the ``quantile`` of the confidences, rounded down to a multiple of
    0.01 (so the axis starts at a round value), to the largest confidence
    (above it no sample exits). Never empty: at least 0.01 wide, within [0, 1].

    Returns
    -------
    (low, high) : tuple of float
    """
    p, k = _exit(cache, position, exit_type)
    conf = cache.conf[p, k].astype(np.float64)
    high = float(conf.max())
    return max(0.0, _floor_cent(min(float(np.quantile(conf, quantile)), high - 0.01))), high


def _floor_cent(x: float) -> float:
    """``x`` rounded down to a multiple of 0.01; float32 confidences a hair below one count as on it."""
    return float(np.floor(np.round(x * 100, 4)) / 100)


def tail_thresholds(conf, low: float, high: float, candidates=TAIL_THRESHOLDS, shares=TAIL_SHARES) -> np.ndarray:
    """Thresholds whose counts Fig. 3 prints: the ``candidates`` inside (low, high].

    When none lies there (a shallow exit, few classes: confidences far
    below 0.9), the thresholds above which the ``shares`` of the samples
    ``conf`` remain, rounded down to 0.01; failing that, ``high``.
    """
    t = [c for c in candidates if low < c <= high]
    if not t:
        conf = np.asarray(conf, dtype=np.float64)
        t = [c for c in sorted({_floor_cent(np.quantile(conf, 1 - s)) for s in shares}) if low < c <= high]
    return np.asarray(t or [high], dtype=np.float64)


def threshold_tail(cache, position=0, exit_type=None, within=None) -> pd.DataFrame:
    """How many samples the high-threshold end of Fig. 3 rests on.

    :func:`threshold_curve` rows at the :func:`tail_thresholds` of the
    drawn range ``within`` (default :func:`confidence_range`). ``n_exited``
    is the number of samples with confidence c >= t (E_n, Eq. 7),
    ``n_correct`` of those correct.
    """
    p, k = _exit(cache, position, exit_type)
    low, high = confidence_range(cache, p, k) if within is None else within
    return threshold_curve(cache, p, k, tail_thresholds(cache.conf[p, k], low, high))


def threshold_curve(cache, position=0, exit_type=None, thresholds=None) -> pd.DataFrame:
    """Accuracy and fraction of samples exited at one exit as its threshold varies (Fig. 3).

    Only exit (p, k) is enabled, as in the paper: a sample leaves if its
    confidence max(y~_{p,k}) >= t (W_n of Eq. 4).

    Parameters
    ----------
    cache : ExitCache
    position : int or str, default 0
        Early position p (index or name); default the first.
    exit_type : int, str or None
        Exit type k; None picks the largest (most MACs) available type at ``p``.
    thresholds : array-like of float, optional
        Thresholds t; default 201 evenly spaced values over
        :func:`confidence_range`: from where 99 % of the samples still exit
        to the exit's largest confidence, so that the curve resolves where
        the confidences are (near 1 for deep exits; far below 1 for shallow
        exits or few classes).

    Returns
    -------
    DataFrame
        One row per threshold: ``threshold``, ``n_exited`` (E_n, Eq. 7),
        ``n_correct`` (EC_n, Eq. 8), ``exited_fraction`` (E_n / M) and
        ``exited_accuracy`` (A_n, Eq. 9; NaN where no sample exits). The
        position and exit type names are in ``frame.attrs``.
    """
    p, k = _exit(cache, position, exit_type)
    truth, labels_known = _truth(cache)
    conf = cache.conf[p, k].astype(np.float64)
    if thresholds is None:
        t = np.linspace(*confidence_range(cache, p, k), 201)
    else:
        t = np.asarray(thresholds, dtype=np.float64).ravel()
    correct = cache.pred[p, k] == truth
    order = np.argsort(conf, kind="stable")
    sorted_conf = conf[order]
    # correct_above[i] = number of correct samples among sorted positions i..M-1
    correct_above = np.concatenate([np.cumsum(correct[order][::-1])[::-1], [0]])
    first = np.searchsorted(sorted_conf, t, side="left")
    n_exited = (conf.shape[0] - first).astype(np.int64)
    n_correct = correct_above[first].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(n_exited > 0, n_correct / np.maximum(n_exited, 1), np.nan)
    frame = pd.DataFrame(
        {
            "threshold": t,
            "n_exited": n_exited,
            "n_correct": n_correct,
            "exited_fraction": n_exited / conf.shape[0],
            "exited_accuracy": accuracy,
        }
    )
    frame.attrs.update(
        position=cache.positions[p],
        position_index=p,
        exit_type=cache.exit_types[k],
        exit_type_index=k,
        labels_known=labels_known,
        n_samples=int(conf.shape[0]),
        base_accuracy=head_accuracy(cache),
        backbone=cache.metadata.get("backbone"),
    )
    return frame


# --------------------------------------------------------- Figs. 4, 5, 6, gen.


def pareto_front(table: pd.DataFrame, cost="rel_cost", accuracy="accuracy") -> pd.DataFrame:
    """Rows of ``table`` that no other row dominates (lower cost, higher accuracy).

    A row is kept iff its accuracy is strictly higher than that of every row
    with a lower or equal cost; among rows of equal cost only the most
    accurate one (the first in table order on a full tie) survives. The
    result is sorted by cost and keeps the original index.

    Parameters
    ----------
    table : DataFrame
        Needs the ``cost`` and ``accuracy`` columns; NaN rows are dropped.
    """
    missing = [c for c in (cost, accuracy) if c not in table.columns]
    if missing:
        raise ResultError(f"table lacks column(s) {missing} needed for the Pareto front")
    t = table.dropna(subset=[cost, accuracy])
    if t.empty:
        return t.copy()
    # cost ascending, then accuracy descending, ties in table order
    order = np.lexsort((np.arange(len(t)), -t[accuracy].to_numpy(float), t[cost].to_numpy(float)))
    t = t.iloc[order]
    acc = t[accuracy].to_numpy(float)
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(acc)[:-1]])
    return t[acc > best_before].copy()


def tradeoff_curve(result, pareto: bool = True, name: str | None = None) -> pd.DataFrame:
    """The accuracy/cost trade-off of a lambda sweep (one curve of Figs. 4-6).

    Parameters
    ----------
    result : SearchResult
    pareto : bool, default True
        Keep only non-dominated configurations (:func:`pareto_front`, the
        rule of ``SearchResult.pareto``).
    name : str, optional
        Curve label, stored in a ``name`` column.

    Returns
    -------
    DataFrame
        ``lambda, rel_cost (C, Eq. 11), rel_accuracy (A, Eq. 10), accuracy,
        cost, unit`` and ``row`` (index of the configuration in ``result``),
        sorted by ``rel_cost``; ``attrs`` hold ``base_accuracy`` (A_ori) and
        ``search_seconds``.
    """
    frame = curve_from_table(result.table, pareto=pareto, name=name)
    frame.attrs["base_accuracy"] = base_accuracy(result)
    frame.attrs["search_seconds"] = search_seconds(result)
    return frame


def curve_from_table(table: pd.DataFrame, pareto: bool = True, name: str | None = None) -> pd.DataFrame:
    """:func:`tradeoff_curve` of a bare result table (e.g. ``SearchResult.evaluate(test_cache)``)."""
    table = table.reset_index(drop=True)
    missing = [c for c in CURVE_COLUMNS if c not in table.columns]
    if missing:
        raise ResultError(f"search result table lacks column(s) {missing}")
    frame = table[list(CURVE_COLUMNS)].copy()
    frame.insert(0, "row", np.arange(len(frame)))
    frame = pareto_front(frame) if pareto else frame.sort_values("rel_cost", kind="stable")
    frame = frame.reset_index(drop=True)
    if name is not None:
        frame.insert(0, "name", name)
    return frame


def with_intervals(frame: pd.DataFrame, n_samples: int, confidence: float = 0.95) -> pd.DataFrame:
    """``frame`` with ``accuracy_low`` / ``accuracy_high``: exact (Clopper-Pearson) intervals of ``accuracy``.

    ``accuracy`` is a share of ``n_samples`` (so ``accuracy * n_samples`` is a
    count of correct predictions).
    """
    from dyce_search.stats import binomial_interval

    out = frame.copy()
    k = np.rint(out["accuracy"].to_numpy(float) * n_samples).astype(np.int64)
    low, high = binomial_interval(k, np.full(k.shape, int(n_samples)), confidence)
    out["accuracy_low"] = np.atleast_1d(low)
    out["accuracy_high"] = np.atleast_1d(high)
    return out


def held_out_curve(result, cache, name: str | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """The configurations of ``result``'s front, measured unchanged on another split, with exact intervals.

    The rows are those of the search split's Pareto front (the configurations
    a reader of the in-sample front would deploy), *not* re-filtered on
    ``cache``: picking the front again on the held-out split would select on
    it and flatter the curve.

    Parameters
    ----------
    result : SearchResult
        Searched on one split (e.g. :func:`dyce_search.front`).
    cache : ExitCache
        Another split of the same model (e.g. the test split).
    name : str, optional
        Curve label (``name`` column).
    confidence : float
        Of the exact (Clopper-Pearson) accuracy intervals.

    Returns
    -------
    DataFrame
        The columns of :func:`curve_from_table` measured on ``cache``, sorted
        by their cost there, plus ``accuracy_low`` / ``accuracy_high``;
        ``attrs["base_accuracy"]`` is A_ori on ``cache``.
    """
    rows = curve_from_table(result.table, pareto=True)["row"].to_numpy()
    measured = curve_from_table(result.evaluate(cache), pareto=False)
    frame = measured.set_index("row").loc[rows].reset_index().sort_values("rel_cost", kind="stable")
    frame = with_intervals(frame.reset_index(drop=True), cache.n_samples, confidence)
    if name is not None:
        frame.insert(0, "name", name)
    frame.attrs["base_accuracy"] = head_accuracy(cache)
    frame.attrs["search_seconds"] = search_seconds(result)
    return frame


def search_seconds(result) -> float:
    """Total wall time of a search: ``metadata["search_seconds"]``, else the sum of the per-lambda ``seconds``."""
    total = result.metadata.get("search_seconds")
    if total is not None:
        return float(total)
    if "seconds" not in result.table.columns:
        return float("nan")
    return float(np.nansum(result.table["seconds"].to_numpy(float)))


#: ``split`` of curves measured on the samples their search ran on.
IN_SAMPLE = "search split (in-sample)"
#: ``split`` of curves measured on a held-out split.
HELD_OUT = "test split"


def tradeoff_curves(results: Mapping, pareto: bool = True, on=None, in_sample: bool = True) -> pd.DataFrame:
    """Trade-off curves of several named results, stacked (long form, ``name`` first).

    Parameters
    ----------
    results : mapping of str to SearchResult
    pareto : bool
        In-sample curves keep only non-dominated configurations.
    on : ExitCache or mapping of str to ExitCache, optional
        A held-out split (for every result, or per name): those results are
        measured there by :func:`held_out_curve`.
    in_sample : bool
        Also keep the in-sample curve of a result measured ``on`` a held-out
        split (e.g. drawn dashed next to it).

    Returns
    -------
    DataFrame
        :func:`tradeoff_curve` / :func:`held_out_curve` rows with ``split``
        (:data:`IN_SAMPLE` or :data:`HELD_OUT`); ``attrs["base_accuracy"]``
        maps each name to A_ori on its held-out split if it has one, else on
        its search split, and ``attrs["search_seconds"]`` each name to its
        search time.
    """
    if not results:
        raise ResultError("no search results given")
    held_out = {str(n): on for n in results} if on is not None and not isinstance(on, Mapping) else \
        {str(n): c for n, c in (on or {}).items()}
    unknown = sorted(set(held_out) - {str(n) for n in results})
    if unknown:
        raise ResultError(f"held-out caches given for unknown result(s) {unknown}")
    frames, base, seconds = [], {}, {}
    for n, r in results.items():
        n = str(n)
        curve = tradeoff_curve(r, pareto=pareto, name=n)
        base[n], seconds[n] = curve.attrs["base_accuracy"], curve.attrs["search_seconds"]
        if n in held_out:
            test = held_out_curve(r, held_out[n], name=n)
            frames.append(test.assign(split=HELD_OUT))
            base[n] = test.attrs["base_accuracy"]
            if not in_sample:
                continue
        frames.append(curve.assign(split=IN_SAMPLE))
    out = pd.concat(frames, ignore_index=True)
    out.attrs["base_accuracy"] = base
    out.attrs["search_seconds"] = seconds
    return out


def standalone_exits(cache, costs=None) -> pd.DataFrame:
    """Every available exit used alone with threshold 0 (the dots of Fig. 6).

    With only exit (p, k) enabled at t = 0 every sample leaves there, so the
    accuracy is the exit's standalone accuracy and the relative cost is
    sum_{n' <= p} S_{n'} + Delta_{p,k} (Eq. 11 with E_p = M).

    Returns
    -------
    DataFrame
        One row per available exit: ``position`` (index), ``position_name``,
        ``exit_type`` (index), ``exit_type_name``, ``rel_cost`` (C, Eq. 11),
        ``unit`` (of ``costs``, default the cache's MACs), ``accuracy`` and
        ``rel_accuracy`` (accuracy / A_ori).
    """
    from dyce_search import Costs

    costs = Costs.from_cache(cache) if costs is None else costs
    _, labels_known = _truth(cache)
    upto, delta = _relative_exit_costs(cache, costs)
    a_ori = head_accuracy(cache)
    # the searches' convention: agreement with the head as soon as one label is unknown
    accuracy = cache.standalone_accuracy("label" if labels_known else "head")
    rows = []
    for p, k in zip(*np.nonzero(cache.available)):
        acc = float(accuracy[p, k])
        rows.append(
            {
                "position": int(p),
                "position_name": cache.positions[p],
                "exit_type": int(k),
                "exit_type_name": cache.exit_types[k],
                "rel_cost": float(upto[p] + delta[p, k]),
                "unit": costs.unit,
                "accuracy": acc,
                "rel_accuracy": acc / a_ori if a_ori > 0 else np.nan,
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=["position", "position_name", "exit_type", "exit_type_name", "rel_cost", "unit", "accuracy",
                 "rel_accuracy"],
    )
    frame.attrs["base_accuracy"] = a_ori
    return frame


# -------------------------------------------------------- exit distribution


def exit_distribution(cache, config, costs=None) -> pd.DataFrame:
    """Fraction of samples leaving at each position, the head included (E_n / M, Eq. 7).

    Parameters
    ----------
    cache : ExitCache
    config : Config
        G = {k, t}; checked against the cache by :func:`dyce_search.evaluate`.
    costs : Costs, optional

    Returns
    -------
    DataFrame
        P + 1 rows: ``position`` (0..P, P = head), ``position_name`` ("head"
        for P), ``exit_type_name`` (missing where disabled), ``threshold`` (NaN
        where disabled, 0 at the head), ``n_exited`` (E_n), ``fraction``
        (E_n / M, sums to 1) and ``accuracy`` of the samples leaving there
        (A_n, Eq. 9; NaN where none leave).
    """
    from dyce_search.evaluation import evaluate

    ev = evaluate(cache, config, costs)
    P = cache.n_positions
    types = [cache.exit_types[k] if k >= 0 else None for k in config.exit_types] + [None]
    return pd.DataFrame(
        {
            "position": np.arange(P + 1),
            "position_name": [*cache.positions, "head"],
            "exit_type_name": types,
            "threshold": np.append(config.thresholds, 0.0),
            "n_exited": np.asarray(ev.exits, dtype=np.int64),
            "fraction": np.asarray(ev.exits, dtype=np.float64) / ev.n_samples,
            "accuracy": np.asarray(ev.position_accuracy, dtype=np.float64),
        }
    )


def exit_distributions(cache, result, rows, labels=None) -> pd.DataFrame:
    """:func:`exit_distribution` of several configurations of ``result`` (long form).

    Parameters
    ----------
    rows : sequence of int
        Row indices into ``result.table`` / ``result.configs``.
    labels : sequence of str, optional
        One label per row (default ``"lambda=<value>"``).

    Returns
    -------
    DataFrame
        The columns of :func:`exit_distribution` plus ``label``, ``row``,
        ``lambda``, ``rel_cost`` (C, Eq. 11), ``unit`` and ``rel_accuracy`` of the configuration.
    """
    rows = [int(r) for r in rows]
    n = len(result.configs)
    bad = [r for r in rows if not 0 <= r < n]
    if bad:
        raise ResultError(f"row(s) {bad} out of range for a result with {n} configurations")
    table = result.table.reset_index(drop=True)
    if labels is None:
        labels = [f"λ={table['lambda'].iloc[r]:.2f}" for r in rows]
    frames = []
    for r, label in zip(rows, labels):
        f = exit_distribution(cache, result.configs[r])
        f.insert(0, "label", label)
        f.insert(1, "row", r)
        f.insert(2, "lambda", float(table["lambda"].iloc[r]))
        f.insert(3, "rel_cost", float(table["rel_cost"].iloc[r]))
        f.insert(4, "unit", result.unit)
        f.insert(5, "rel_accuracy", float(table["rel_accuracy"].iloc[r]))
        frames.append(f)
    if not frames:
        raise ResultError("no configurations selected for the exit distribution")
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------ compatibility


def check_same_model(a, b, what_a: str = "calibration cache", what_b: str = "test cache") -> None:
    """Raise :class:`~dyce_search.CacheError` unless two caches come from one run's model.

    :func:`dyce_search.provenance.check_caches`: the structure (backbone,
    classes, positions, exit types), the provenance record (backbone weights,
    exits, preprocessing) and the MACs, so configurations searched on one can
    be evaluated on the other at the same cost. A report offers no override:
    it compares figures of one model.
    """
    from dyce_search.provenance import check_caches

    check_caches(a, b, what_a, what_b, error=CacheError, override=None)
