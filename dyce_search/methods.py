"""The configuration search methods, one entry each in :data:`METHODS`.

The API (:func:`dyce_search.run`), the CLI (``--method``) and ``analysis``
(Fig. 5) all read this table; adding a method is one :class:`Method` entry.

``"descent"`` (default, this package)
    Exact coordinate descent from several starts (see :func:`_descent`).
``"single_pass"`` (paper, Algorithm 3)
    For p = 0..P-1, take the best option at p (none, or any allowed exit
    type with its minimised threshold) if it strictly lowers f.
``"iterative"`` (paper, Algorithm 2)
    Each round tries every change (p, k_c), k_c = none included, and applies
    the single best one if it strictly lowers f; stops when none does or
    after ``max_rounds``. Ties go to the earliest position, then none, then
    the smallest type index (Algorithm 2's visiting order).
``"baseline"`` (paper, Fig. 5)
    One exit type at every allowed position with one shared threshold, the
    best per lambda; falls back to the empty configuration if no shared
    threshold strictly lowers f.

Every driver takes the prepared :class:`~dyce_search.problem.Problem` and
returns a :class:`Found`; lambdas are searched independently (in parallel
``prange`` batches), so results never depend on the number of threads. The
kernels are imported by the drivers, so reading the table (``--help``)
does not load numba.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .problem import Problem

#: Lambdas whose configurations are offered to a lambda as warm starts, in
#: grid steps on either side.
NEIGHBOUR_WINDOW = 8
#: Rounds of warm starts from neighbouring lambdas at most (each one only
#: polishes where a neighbour's configuration is strictly better).
NEIGHBOUR_PASSES = 8


@dataclass
class Found:
    """What a search driver returns, one row per lambda.

    Attributes
    ----------
    exit_types : int64 [L, P]
    thresholds : float64 [L, P]
    seconds : float64 [L]
        Search time per lambda (a batch's wall time divided by its size).
    columns : dict[str, list]
        Method-specific per-row columns (e.g. ``rounds``, ``start``).
    """

    exit_types: np.ndarray
    thresholds: np.ndarray
    seconds: np.ndarray
    columns: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """One configuration search method.

    Attributes
    ----------
    name : str
        The name ``run(method=...)`` and ``--method`` take.
    summary : str
        One line for ``--help`` and the docs.
    label : str
        Legend label in figures.
    paper : bool
        Whether the method is the paper's (kept exactly as the paper defines it).
    thresholds : tuple of str
        Threshold minimisers it supports (``"exact"``, ``"bounded"``).
    search : callable
        ``search(problem, allowed, lambdas, coefs, threshold, options, bar) -> Found``.
    conservative : bool
        Whether it offers the released code's conservative objective
        (:mod:`dyce_search.conservative`, with ``threshold="bounded"``).
    """

    name: str
    summary: str
    label: str
    paper: bool
    thresholds: tuple
    search: Callable
    conservative: bool = False


# ------------------------------------------------------------------ helpers


def presorted(problem: Problem):
    """(keys, n_valid) of every exit's column, sorted once per problem (lambda independent)."""
    from ._kernels import search as kernels

    cached = getattr(problem, "_presorted", None)
    if cached is None:
        cached = kernels.presort(problem.conf, problem.pred, problem.truth, problem.available)
        problem._presorted = cached
    return cached


def _batched(n, fn, bar, seconds):
    """Call ``fn(slice)`` on batches of lambdas so a progress bar moves; fills ``seconds`` per lambda.

    Each lambda is computed on its own, so batching never changes a result.
    """
    import numba

    size = 4 * numba.get_num_threads()
    outputs = []
    with numba.parallel_chunksize(1):
        for start in range(0, n, size):
            sl = slice(start, min(n, start + size))
            t0 = time.perf_counter()
            outputs.append((sl, fn(sl)))
            seconds[sl] += (time.perf_counter() - t0) / (sl.stop - sl.start)
            if bar is not None:
                bar.update(sl.stop - sl.start)
    return outputs


def kernel_args(problem, allowed):
    """The arrays every search kernel takes first, presorted columns included."""
    keys, n_valid = presorted(problem)
    return (keys, n_valid, problem.conf, problem.pred, problem.truth, problem.final_correct, problem.seg_q,
            problem.exit_q, allowed)


def _gather(outputs, n, shapes):
    """Concatenate per-batch kernel outputs into full arrays (``shapes``: trailing shape and dtype per output)."""
    arrays = [np.empty((n, *shape), dtype) for shape, dtype in shapes]
    for sl, out in outputs:
        for array, part in zip(arrays, out):
            array[sl] = part
    return arrays


# ------------------------------------------------------------- the paper's


def single_pass_configs(problem, allowed, coefs, bounded, bar=None, seconds=None):
    """Algorithm 3 for every lambda: k [L, P], t [L, P], f [L]."""
    from ._kernels import search as kernels

    P, L = problem.shape[0], coefs.shape[0]
    seconds = np.zeros(L) if seconds is None else seconds
    args = kernel_args(problem, allowed)
    out = _batched(L, lambda sl: kernels.single_pass(*args, coefs[sl], bounded), bar, seconds)
    return _gather(out, L, [((P,), np.int64), ((P,), np.float64), ((), np.float64)])


def _conservative(problem, allowed, lambdas, method, options, bar):
    from .conservative import search

    k, t, seconds = search(problem, allowed, lambdas, method, options["conservative"], options.get("max_rounds"), bar)
    return Found(k, t, seconds)


def _single_pass(problem, allowed, lambdas, coefs, threshold, options, bar):
    if options.get("conservative") is not None:
        return _conservative(problem, allowed, lambdas, "single_pass", options, bar)
    seconds = np.zeros(len(lambdas))
    k, t, _ = single_pass_configs(problem, allowed, coefs, threshold == "bounded", bar, seconds)
    return Found(k, t, seconds)


def iterative_configs(problem, allowed, coefs, bounded=False, max_rounds=None, bar=None, seconds=None):
    """Algorithm 2 for every lambda: k [L, P], t [L, P], f, rounds, scans [L]."""
    from ._kernels import search as kernels

    P, L = problem.shape[0], coefs.shape[0]
    seconds = np.zeros(L) if seconds is None else seconds
    rounds_limit = -1 if max_rounds is None else int(max_rounds)
    args = kernel_args(problem, allowed)
    out = _batched(L, lambda sl: kernels.iterative(*args, coefs[sl], rounds_limit, bounded), bar, seconds)
    return _gather(out, L, [((P,), np.int64), ((P,), np.float64), ((), np.float64), ((), np.int64), ((), np.int64)])


def _iterative(problem, allowed, lambdas, coefs, threshold, options, bar):
    if options.get("conservative") is not None:
        return _conservative(problem, allowed, lambdas, "iterative", options, bar)
    seconds = np.zeros(len(lambdas))
    k, t, _, rounds, scans = iterative_configs(problem, allowed, coefs, threshold == "bounded",
                                               options.get("max_rounds"), bar, seconds)
    return Found(k, t, seconds, {"rounds": [int(v) for v in rounds], "scans": [int(v) for v in scans]})


def baseline_types(cache, allowed, baseline_type) -> list[int]:
    """Exit types a baseline search tries: every usable one for ``"best"``, else the one named."""
    K = allowed.shape[1]
    if isinstance(baseline_type, str) and baseline_type == "best":
        return [k for k in range(K) if allowed[:, k].any()]
    k = cache.exit_type_index(baseline_type)
    if not allowed[:, k].any():
        raise ValueError(f"baseline exit type {cache.exit_types[k]!r} is not available at any allowed position")
    return [k]


def baseline_configs(problem, allowed, types, coefs, bounded):
    """Best shared threshold per lambda over ``types``: k [L, P], t [L, P], f [L].

    Falls back to the empty configuration (f of the original model) when no
    shared threshold strictly lowers f; ties go to the smaller type index.
    """
    from ._kernels import search as kernels

    P, L = problem.shape[0], coefs.shape[0]
    M = problem.shape[2]
    total_q = int(problem.seg_q.sum())
    best_f = np.array([c[0] + c[1] * float(problem.n_head_correct) + c[2] * float(M * total_q) for c in coefs])
    best_k = np.full(L, -1, np.int64)
    best_t = np.full(L, np.nan)
    for k in types:
        on = np.ascontiguousarray(allowed[:, k])
        thresholds, lower, n_correct, cost_sum = kernels.baseline_sweep(
            problem.conf, problem.pred, problem.truth, problem.final_correct, problem.seg_q, problem.exit_q, k, on)
        if bounded:
            t, f = kernels.pick_bounded(thresholds, n_correct, cost_sum, coefs)
        else:
            idx, f = kernels.pick_minimum(n_correct, cost_sum, coefs)
            t = np.array([kernels.shared_threshold(thresholds[i], lower[i]) if i >= 0 else np.nan for i in idx])
        better = f < best_f  # strict, in type order: the smallest type index on ties
        best_f = np.where(better, f, best_f)
        best_k = np.where(better, k, best_k)
        best_t = np.where(better, t, best_t)
    k_out = np.full((L, P), -1, np.int64)
    t_out = np.full((L, P), np.nan)
    for j in range(L):
        if best_k[j] >= 0:
            on = allowed[:, best_k[j]]
            k_out[j, on] = best_k[j]
            t_out[j, on] = best_t[j]
    return k_out, t_out, best_f


def _baseline(problem, allowed, lambdas, coefs, threshold, options, bar):
    types = baseline_types(problem.cache, allowed, options.get("baseline_type", "best"))
    start = time.perf_counter()
    k, t, _ = baseline_configs(problem, allowed, types, coefs, threshold == "bounded")
    if bar is not None:
        bar.update(len(lambdas))
    return Found(k, t, np.full(len(lambdas), (time.perf_counter() - start) / len(lambdas)))


# ------------------------------------------------------------------ descent

#: Starts of every descent, in tie-breaking order; "original model" is the
#: empty configuration, whose first backward sweep picks each exit knowing
#: the ones after it.
DESCENT_STARTS = ("single_pass", "single_pass (bounded)", "baseline", "original model")
#: The search (method, threshold minimiser) each start comes from, for result rows.
START_METHODS = {
    "single_pass": ("single_pass", "exact"),
    "single_pass (bounded)": ("single_pass", "bounded"),
    "baseline": ("baseline", "exact"),
    "original model": ("original model", "exact"),
}


def descent_starts(problem, allowed, coefs):
    """Start configurations [S, L, P] (exit types, thresholds) in :data:`DESCENT_STARTS` order."""
    P, L = problem.shape[0], coefs.shape[0]
    sp_k, sp_t, _ = single_pass_configs(problem, allowed, coefs, bounded=False)
    spb_k, spb_t, _ = single_pass_configs(problem, allowed, coefs, bounded=True)
    bl_k, bl_t, _ = baseline_configs(problem, allowed, baseline_types(problem.cache, allowed, "best"), coefs, False)
    empty_k = np.full((L, P), -1, np.int64)
    empty_t = np.full((L, P), np.nan)
    return np.stack([sp_k, spb_k, bl_k, empty_k]), np.stack([sp_t, spb_t, bl_t, empty_t])


def descend(problem, allowed, coefs, start_k, start_t, bar=None, seconds=None):
    """Polish every start [S, L, P] at every lambda and keep the best; arrays per lambda.

    Returns k [L, P], t [L, P], f, n_correct, cost_sum, start index, sweeps [L].
    """
    from ._kernels import descent as descent_kernels

    P, L = problem.shape[0], coefs.shape[0]
    seconds = np.zeros(L) if seconds is None else seconds
    args = kernel_args(problem, allowed)
    out = _batched(L, lambda sl: descent_kernels.descent(*args, coefs[sl], start_k[:, sl], start_t[:, sl]), bar,
                   seconds)
    return _gather(out, L, [((P,), np.int64), ((P,), np.float64), ((), np.float64), ((), np.int64), ((), np.int64),
                            ((), np.int64), ((), np.int64)])


def descent_sweep(problem, allowed, lambdas, coefs, bar=None):
    """Exact coordinate descent over a lambda grid; returns (Found, pool exit types [N, P], pool thresholds [N, P]).

    Starts (:data:`DESCENT_STARTS`): the exact and the bounded single-pass
    results, the best same-threshold baseline and the original model. Each is
    polished by :func:`dyce_search._kernels.descent.polish` (backward sweeps
    of exact single-position changes until none lowers f) and the lowest f
    is kept. Then, repeatedly, every lambda whose f a configuration of a
    lambda within :data:`NEIGHBOUR_WINDOW` grid steps beats polishes that
    configuration too. Every phase reads only the previous phase's results,
    so the outcome does not depend on the thread count. The pool holds every
    start and every result (the budget targets pick their starts from it).
    """
    from ._kernels import descent as descent_kernels

    L = len(lambdas)
    P = problem.shape[0]
    seconds = np.zeros(L)
    t0 = time.perf_counter()
    start_k, start_t = descent_starts(problem, allowed, coefs)
    seconds += (time.perf_counter() - t0) / L
    k, t, f, n_correct, cost_sum, start, sweeps = descend(problem, allowed, coefs, start_k, start_t, bar, seconds)
    names = [DESCENT_STARTS[s] for s in start]
    t0 = time.perf_counter()
    for _ in range(NEIGHBOUR_PASSES):
        source = descent_kernels.neighbour_starts(n_correct, cost_sum, f, coefs, NEIGHBOUR_WINDOW)
        rows = np.flatnonzero(source >= 0)
        if rows.size == 0:
            break
        src = source[rows]
        k2, t2, f2, nc2, cs2, _, sw2 = descend(problem, allowed, coefs[rows], k[src][None], t[src][None])
        sweeps[rows] += sw2
        better = f2 < f[rows]  # always: each polish starts below f[rows]
        for i in np.flatnonzero(better):
            j = rows[i]
            k[j], t[j], f[j], n_correct[j], cost_sum[j] = k2[i], t2[i], f2[i], nc2[i], cs2[i]
            names[j] = f"lambda={float(lambdas[src[i]]):g}"
    seconds += (time.perf_counter() - t0) / L
    found = Found(k, t, seconds, {"start": names, "sweeps": [int(v) for v in sweeps]})
    pool_k = np.concatenate([start_k.reshape(-1, P), k])
    pool_t = np.concatenate([start_t.reshape(-1, P), t])
    return found, pool_k, pool_t


def _descent(problem, allowed, lambdas, coefs, threshold, options, bar):
    return descent_sweep(problem, allowed, lambdas, coefs, bar)[0]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "descent",
            "exact coordinate descent from the single-pass (both minimisers), baseline and original-model "
            "starts, warm-started from neighbouring lambdas; never worse than any of them",
            "descent",
            False,
            ("exact",),
            _descent,
        ),
        Method("single_pass", "the paper's single-pass search (Algorithm 3)", "single-pass", True,
               ("exact", "bounded"), _single_pass, conservative=True),
        Method("iterative", "the paper's iterative search (Algorithm 2)", "iterative", True,
               ("exact", "bounded"), _iterative, conservative=True),
        Method("baseline", "one exit type at every position with one shared threshold (paper Fig. 5)", "baseline",
               True, ("exact", "bounded"), _baseline),
    )
}
#: The method of :func:`dyce_search.run` and the CLI when none is given.
DEFAULT_METHOD = "descent"


def get_method(name) -> Method:
    """The :class:`Method` called ``name``; ValueError listing the names otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {name!r}") from None


__all__ = ["METHODS", "DEFAULT_METHOD", "Method", "Found", "get_method", "presorted", "DESCENT_STARTS",
           "single_pass_configs", "iterative_configs", "baseline_configs", "baseline_types", "descent_starts", "descend",
           "descent_sweep", "START_METHODS"]
