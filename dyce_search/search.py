"""Configuration search (paper Sec. V-B): one exit configuration G = {k, t} per lambda.

Methods, all starting from the empty configuration (every early exit disabled):

``"single_pass"`` (Algorithm 3)
    For p = 0..P-1, take the best option at p (none, or any allowed exit type
    with its minimised threshold) if it strictly lowers f.
``"iterative"`` (Algorithm 2)
    Each round tries every change (p, k_c), k_c = none included, and applies
    the single best one if it strictly lowers f; stops when none does or
    after ``max_rounds``. Ties go to the earliest position, then none, then
    the smallest type index (Algorithm 2's visiting order).
``"baseline"`` (paper Fig. 5)
    One exit type at every allowed position with one shared threshold, the
    best per lambda; falls back to the empty configuration if no shared
    threshold strictly lowers f.

Thresholds are minimised ``"exact"``-ly (default; global minimum over the
candidate confidences, see :mod:`dyce_search.thresholds`) or ``"bounded"``
(the paper's ``scipy.optimize.minimize_scalar``). Objective values inside the
searches are computed from exact integer counts, so results are identical
across runs and thread counts. The reported metrics come from
:func:`dyce_search.evaluation.evaluate`, so search and evaluation never disagree.
See docs/search.md for the algorithms, the exactness argument and timings.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ._kernels import search as kernels
from .config import Config
from .thresholds import METHODS as THRESHOLD_METHODS
from .thresholds import Candidate, Prepared

METHODS = ("single_pass", "iterative", "baseline")
OBJECTIVES = ("paper", "normalized")


def check_lambdas(lambdas) -> np.ndarray:
    """float64 [L] from array-like ``lambdas``; ValueError if empty, NaN or outside [0, 1]."""
    try:
        lam = np.asarray(lambdas, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"lambdas must be numbers in [0, 1], got {lambdas!r}") from None
    lam = np.atleast_1d(lam)
    if lam.ndim != 1:
        raise ValueError(f"lambdas must be one-dimensional, got shape {lam.shape}")
    if lam.size == 0:
        raise ValueError("lambdas is empty; give at least one value in [0, 1]")
    bad = ~((lam >= 0.0) & (lam <= 1.0))  # NaN fails both
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"lambda must be in [0, 1], got {lam[i]!r} at index {i}")
    return np.ascontiguousarray(lam)


def allowed_exits(cache, positions=None, exit_types=None) -> np.ndarray:
    """bool [P, K]: exits a search may enable (available, at an allowed position, of an allowed type).

    Parameters
    ----------
    positions, exit_types : iterable of int or str, optional
        Allowed early positions / exit types by index or name; None allows all.
    """
    allowed = np.asarray(cache.available, bool).copy()
    if positions is not None:
        keep = np.zeros(cache.n_positions, bool)
        for p in _as_list(positions, "positions"):
            keep[cache.position_index(p)] = True
        allowed &= keep[:, None]
    if exit_types is not None:
        keep = np.zeros(cache.n_types, bool)
        for k in _as_list(exit_types, "exit_types"):
            keep[cache.exit_type_index(k)] = True
        allowed &= keep[None, :]
    return allowed


def _as_list(values, what):
    if isinstance(values, (str, int, np.integer)):
        return [values]
    try:
        return list(values)
    except TypeError:
        raise ValueError(f"{what} must be a list of indices or names, got {values!r}") from None


def _progress(progress, total, desc):
    """tqdm bar over lambdas: on a TTY by default, never with progress=False."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="lambda", leave=False)


# ------------------------------------------------------------------ exact


def _batches(n, size):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _exact_searches(prep, allowed, coefs, method, max_rounds, bar):
    """Run the numba searches on batches of lambdas; returns k [L, P], t [L, P], f [L], seconds [L]."""
    import numba

    L = coefs.shape[0]
    start = time.perf_counter()
    keys, n_valid = kernels.presort(prep.conf, prep.pred, prep.truth, prep.available)
    setup = time.perf_counter() - start
    k_out = np.empty((L, prep.shape[0]), np.int64)
    t_out = np.empty((L, prep.shape[0]), np.float64)
    f_out = np.empty(L, np.float64)
    seconds = np.empty(L, np.float64)
    # Batches keep every thread busy yet let the progress bar move; each
    # lambda is computed on its own, so batching never changes a result.
    size = 4 * numba.get_num_threads()
    with numba.parallel_chunksize(1):
        for sl in _batches(L, size):
            t0 = time.perf_counter()
            if method == "single_pass":
                k, t, f = kernels.single_pass(keys, n_valid, prep.conf, prep.pred, prep.truth, prep.final_correct,
                                              prep.seg_q, prep.exit_q, allowed, coefs[sl])
            else:
                k, t, f, _, _ = kernels.iterative(keys, n_valid, prep.conf, prep.pred, prep.truth,
                                               prep.final_correct, prep.seg_q, prep.exit_q, allowed, coefs[sl],
                                               -1 if max_rounds is None else int(max_rounds))
            k_out[sl], t_out[sl], f_out[sl] = k, t, f
            seconds[sl] = (time.perf_counter() - t0) / (sl.stop - sl.start) + setup / L
            if bar is not None:
                bar.update(sl.stop - sl.start)
    return k_out, t_out, f_out, seconds


# ---------------------------------------------------------------- bounded


def _bounded_single_pass(prep, allowed, lam):
    """Algorithm 3 with the paper's bounded minimisation of every threshold."""
    P, K, _ = prep.shape
    k_cfg = np.full(P, -1, np.int64)
    t_cfg = np.full(P, np.nan)
    state = prep.state(k_cfg, t_cfg)
    f_min = _value(prep, state, lam)
    for p in range(P):
        if not allowed[p].any():
            continue
        cand = Candidate(prep, state, k_cfg, p, lam)
        if cand.n_reach == 0:
            continue
        choice = None
        for k in np.flatnonzero(allowed[p]):
            t, f = cand.bounded(int(k))
            if f < f_min:
                f_min, choice = f, (int(k), t)
        if choice is not None:
            k_cfg[p], t_cfg[p] = choice
            state = prep.state(k_cfg, t_cfg)
    return k_cfg, t_cfg, f_min


def _bounded_iterative(prep, allowed, lam, max_rounds):
    """Algorithm 2 with the paper's bounded minimisation of every threshold."""
    P, K, _ = prep.shape
    k_cfg = np.full(P, -1, np.int64)
    t_cfg = np.full(P, np.nan)
    state = prep.state(k_cfg, t_cfg)
    f_cur = _value(prep, state, lam)
    rounds = 0
    while max_rounds is None or rounds < max_rounds:
        f_min, choice = f_cur, None
        for p in range(P):
            if not allowed[p].any():
                continue
            cand = Candidate(prep, state, k_cfg, p, lam)
            if k_cfg[p] >= 0:
                f = cand.disabled()
                if f < f_min:
                    f_min, choice = f, (p, -1, math.nan)
            if cand.n_reach == 0:
                continue
            for k in np.flatnonzero(allowed[p]):
                t, f = cand.bounded(int(k))
                if f < f_min:
                    f_min, choice = f, (p, int(k), t)
        if choice is None:
            break
        p, k, t = choice
        k_cfg[p], t_cfg[p] = k, t
        state = prep.state(k_cfg, t_cfg)
        f_cur = _value(prep, state, lam)
        rounds += 1
    return k_cfg, t_cfg, f_cur


def _value(prep, state, lam):
    from ._kernels.thresholds import objective_value

    return objective_value(*prep.coefficients(lam), state[5], state[6])


# --------------------------------------------------------------- baseline


def _baseline_types(cache, allowed, baseline_type):
    K = allowed.shape[1]
    if isinstance(baseline_type, str) and baseline_type == "best":
        types = [k for k in range(K) if allowed[:, k].any()]
    else:
        k = cache.exit_type_index(baseline_type)
        if not allowed[:, k].any():
            raise ValueError(f"baseline exit type {cache.exit_types[k]!r} is not available at any allowed position")
        types = [k]
    return types  # empty: nothing can be enabled, every lambda gets the original model


def _baseline(prep, allowed, types, lambdas, coefs, threshold, bar):
    """Best shared threshold per lambda over ``types``; returns k, t, f, seconds."""
    P = prep.shape[0]
    L = len(lambdas)
    start = time.perf_counter()
    empty = prep.state(np.full(P, -1, np.int64), np.full(P, np.nan))
    f_empty = np.array([_value(prep, empty, lam) for lam in lambdas])
    best_f = f_empty.copy()
    best_k = np.full(L, -1, np.int64)
    best_t = np.full(L, np.nan)
    seconds = np.zeros(L)
    for k in types:
        on = np.ascontiguousarray(allowed[:, k])
        if threshold == "exact":
            thresholds, n_correct, cost_sum = kernels.baseline_sweep(prep.conf, prep.pred, prep.truth,
                                                                     prep.final_correct, prep.seg_q, prep.exit_q,
                                                                     k, on)
            idx, f = kernels.pick_minimum(n_correct, cost_sum, coefs)
            t = np.where(idx >= 0, thresholds[np.maximum(idx, 0)] if thresholds.size else np.nan, np.nan)
        else:
            from scipy.optimize import minimize_scalar

            from ._kernels.thresholds import objective_value

            f = np.empty(L)
            t = np.empty(L)
            for j, lam in enumerate(lambdas):
                t0 = time.perf_counter()
                a = prep.coefficients(lam)

                def value(x, a=a):
                    nc, cs = kernels.shared_threshold_counts(prep.conf, prep.pred, prep.truth, prep.final_correct,
                                                             prep.seg_q, prep.exit_q, k, on, float(x))
                    return objective_value(*a, nc, cs)

                res = minimize_scalar(value, bounds=(0.0, 1.0), method="bounded")
                t[j], f[j] = float(res.x), float(res.fun)
                seconds[j] += time.perf_counter() - t0
        # strict "<" over types in index order: the smallest type index on ties
        better = f < best_f
        best_f = np.where(better, f, best_f)
        best_k = np.where(better, k, best_k)
        best_t = np.where(better, t, best_t)
    if threshold == "exact":
        seconds[:] = (time.perf_counter() - start) / L
    if bar is not None:
        bar.update(L)
    k_out = np.full((L, P), -1, np.int64)
    t_out = np.full((L, P), np.nan)
    for j in range(L):
        if best_k[j] >= 0:
            on = allowed[:, best_k[j]]
            k_out[j, on] = best_k[j]
            t_out[j, on] = best_t[j]
    return k_out, t_out, best_f, seconds


# ------------------------------------------------------------------ public


def run(
    cache,
    lambdas,
    method="single_pass",
    threshold="exact",
    objective="paper",
    costs=None,
    max_rounds=None,
    baseline_type="best",
    positions=None,
    exit_types=None,
    progress=None,
):
    """Search one exit configuration per lambda (paper Sec. V-B, Algorithms 2 and 3).

    Parameters
    ----------
    cache : ExitCache or path
        The calibration cache (a path is read with ``ExitCache.read``).
    lambdas : array-like of float in [0, 1]
        lambda of Eq. 12 (weight of the error against the cost).
    method : {"single_pass", "iterative", "baseline"}
        Algorithm 3, Algorithm 2, or one exit type everywhere with one shared
        threshold (paper Fig. 5).
    threshold : {"exact", "bounded"}
        How each threshold t_c is minimised (Eq. 13), see :mod:`dyce_search.thresholds`.
    objective : {"paper", "normalized"}
        Scale of f (see :class:`dyce_search.objective.Objective`).
    costs : None, Costs or path
        S_n and Delta_{n,k} before normalisation: the cache's MACs (None), a
        :class:`~dyce_search.costs.Costs`, or a Costs JSON file.
    max_rounds : int, optional
        Iterative search only: stop after this many applied changes (default: until no change helps).
    baseline_type : "best", int or str
        Baseline only: the exit type (index or name), or "best", the type
        whose best shared threshold gives the lowest f for each lambda.
    positions : iterable of int or str, optional
        Early positions where exits may be enabled (others stay disabled).
    exit_types : iterable of int or str, optional
        Exit types that may be used.
    progress : bool, optional
        tqdm bar over lambdas; default: when stderr is a terminal.

    Returns
    -------
    SearchResult
        ``table`` has one row per lambda with ``lambda, method, objective,
        threshold, rel_macs`` (C, Eq. 11), ``rel_accuracy`` (A, Eq. 10),
        ``accuracy, macs, f`` (Eq. 12), ``n_exits, exits`` (E_n), ``exit_types,
        thresholds`` and ``seconds`` (wall time per lambda; the exact searches
        run lambdas in parallel batches and report each batch's time divided
        by its size, the presort shared out over all lambdas).

    Raises
    ------
    ValueError
        Empty lambdas, NaN or a value outside [0, 1]; an unknown method,
        threshold, objective, position or exit type; ``max_rounds`` < 1.
    CacheError, CostError
        If the cache or the costs are malformed or do not fit each other.
    """
    from .cache import ExitCache
    from .evaluation import evaluate
    from .result import SearchResult, search_metadata

    lambdas = check_lambdas(lambdas)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if threshold not in THRESHOLD_METHODS:
        raise ValueError(f"threshold must be one of {THRESHOLD_METHODS}, got {threshold!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if max_rounds is not None and (not isinstance(max_rounds, (int, np.integer)) or max_rounds < 1):
        raise ValueError(f"max_rounds must be a positive integer or None, got {max_rounds!r}")
    if isinstance(cache, (str, Path)):
        cache = ExitCache.read(cache)
    prep = Prepared(cache, costs, objective)
    allowed = allowed_exits(cache, positions, exit_types)
    coefs = prep.coefficient_table(lambdas)
    L = len(lambdas)

    started = time.perf_counter()
    bar = _progress(progress, L, f"{method} search")
    try:
        if method == "baseline":
            types = _baseline_types(cache, allowed, baseline_type)
            k_out, t_out, f_out, seconds = _baseline(prep, allowed, types, lambdas, coefs, threshold, bar)
        elif threshold == "exact":
            k_out, t_out, f_out, seconds = _exact_searches(prep, allowed, coefs, method, max_rounds, bar)
        else:
            P = prep.shape[0]
            k_out = np.empty((L, P), np.int64)
            t_out = np.empty((L, P), np.float64)
            f_out = np.empty(L)
            seconds = np.empty(L)
            for j, lam in enumerate(lambdas):
                t0 = time.perf_counter()
                if method == "single_pass":
                    k_out[j], t_out[j], f_out[j] = _bounded_single_pass(prep, allowed, lam)
                else:
                    k_out[j], t_out[j], f_out[j] = _bounded_iterative(prep, allowed, lam, max_rounds)
                seconds[j] = time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    total_seconds = time.perf_counter() - started

    configs = [Config(k_out[j], t_out[j]) for j in range(L)]
    rows = []
    for j, (lam, config) in enumerate(zip(lambdas, configs)):
        ev = evaluate(cache, config, prep.costs, objective=prep.objective, lam=float(lam))
        rows.append(
            {
                "lambda": float(lam),
                "method": method,
                "objective": objective,
                "threshold": threshold,
                "rel_macs": ev.rel_macs,
                "rel_accuracy": ev.rel_accuracy,
                "accuracy": ev.accuracy,
                "macs": ev.macs,
                "f": ev.objective,
                "n_exits": int(config.enabled.sum()),
                "exits": [int(v) for v in ev.exits],
                "exit_types": [int(v) for v in config.exit_types],
                "thresholds": [float(v) for v in config.thresholds],
                "seconds": float(seconds[j]),
            }
        )
    metadata = search_metadata(cache, method=method, threshold=threshold, objective=objective, costs=prep.costs)
    metadata.update(
        {
            "max_rounds": max_rounds,
            "baseline_type": baseline_type if method == "baseline" else None,
            "allowed_positions": [int(p) for p in np.flatnonzero(allowed.any(axis=1))],
            "allowed_exit_types": [int(k) for k in np.flatnonzero(allowed.any(axis=0))],
            "search_seconds": total_seconds,
        }
    )
    return SearchResult(pd.DataFrame(rows), configs, metadata)


__all__ = ["run", "METHODS", "OBJECTIVES", "check_lambdas", "allowed_exits"]
