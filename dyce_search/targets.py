"""Budget targets: the cheapest configuration within an accuracy drop, the most accurate within a cost, the front.

A lambda sweep of Eq. 12 only reaches configurations on the convex hull of
the accuracy/cost trade-off, and answers "the cheapest configuration within
0.5 % of the original accuracy" (Table II) only as well as its grid allows.
:func:`cheapest` and :func:`most_accurate` answer such questions directly:

1. a descent sweep and the paper's iterative search over a lambda grid
   (``lambdas``) give a pool of configurations: every descent start (the
   single-pass results with both minimisers, the baseline, the original
   model), every descent result and every iterative result;
2. Lagrangian bisection on lambda between the two sweep results that
   bracket the target (``bisection`` steps, each a descent polish warm-started
   from both ends) gets closer;
3. a constrained exact descent (:func:`dyce_search._kernels.descent.polish_constrained`)
   from the best feasible pool configuration, the nearest infeasible one
   and the bisection's result: backward sweeps that re-choose each position
   (none, or an exit type with the cheapest / most accurate threshold that
   keeps the constraint, from the same prefix sums as Eq. 13) until a full
   sweep changes nothing.

The result satisfies its constraint exactly (counts are integers), no
single-position change gives a cheaper (more accurate) configuration that
still satisfies it, and it is at least as good as every pool configuration
that satisfies it, so as every configuration any method's sweep finds on the
same grid; it is a local optimum, not necessarily the global one.
:func:`front` merges a lambda sweep with :func:`cheapest` over a fine grid
of drops into a dense non-dominated front.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._kernels import descent as kernels
from ._kernels.warmup import compile_kernels
from .config import Config
from .methods import DESCENT_STARTS, START_METHODS, descend, descent_sweep, kernel_args
from .problem import Problem

#: Lambda grid of the sweep that seeds a target search and of :func:`front`
#: (0, 0.01, ..., 1, as :func:`dyce_search.run`'s usual grid): every
#: configuration a sweep of the descent, single-pass or baseline finds on this
#: grid is then among the starts.
TARGET_LAMBDAS = np.round(np.linspace(0.0, 1.0, 101), 12)
FRONT_LAMBDAS = TARGET_LAMBDAS
#: Drop levels :func:`front` targets between 0 and the sweep's largest drop.
FRONT_DROPS = 50
#: Lagrangian bisection steps per target.
BISECTION_STEPS = 4
#: Constrained descents per target: from this many of the best feasible pool
#: configurations (distinct counts) and of the nearest infeasible ones.
FEASIBLE_STARTS = 4
NEAR_STARTS = 2

_KINDS = {
    "cheapest": (kernels.CHEAPEST, "max_drop"),
    "most_accurate": (kernels.MOST_ACCURATE, "max_cost"),
}


def _check_targets(values, name, low, high, low_open=False):
    """float64 [T] from one value or a list; ValueError naming ``name`` outside the allowed range."""
    try:
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a list of numbers, got {values!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a number or a non-empty list of numbers, got {values!r}")
    for i, v in enumerate(arr):
        ok = (low < v if low_open else low <= v) and v < high
        if not ok:
            span = f"{'(' if low_open else '['}{low:g}, {high:g})"
            raise ValueError(f"{name} must be in {span}, got {v!r}" + (f" at index {i}" if arr.size > 1 else ""))
    return arr


def _prepare(cache, objective, costs, positions, exit_types, lambdas, default_lambdas):
    from .cache import ExitCache
    from .search import allowed_exits, check_lambdas

    if isinstance(cache, (str, Path)):
        cache = ExitCache.read(cache)
    lambdas = check_lambdas(default_lambdas if lambdas is None else lambdas)
    problem = Problem(cache, costs, objective)
    problem.check_searchable()
    allowed = allowed_exits(cache, positions, exit_types)
    return problem, allowed, lambdas, problem.coefficient_table(lambdas)


@dataclass
class Pool:
    """Configurations a target search starts from, with where each came from.

    Attributes
    ----------
    exit_types : int64 [N, P]
    thresholds : float64 [N, P]
    names : list of str
        e.g. ``"baseline (lambda=0.3)"``.
    methods, minimisers : list of str
        The search and threshold minimiser that produced each one.
    lambdas : float64 [N]
        Its lambda (NaN for given starts).
    sweep : Found
        The descent sweep's result (one row per lambda).
    sweep_rows : slice
        Where the descent results sit in the pool.
    """

    exit_types: np.ndarray
    thresholds: np.ndarray
    names: list
    methods: list
    minimisers: list
    lambdas: np.ndarray
    sweep: object
    sweep_rows: slice


def _pool(problem, allowed, lambdas, coefs, starts, bar):
    """The descent sweep's starts and results, the iterative search's results and ``starts``."""
    from .methods import iterative_configs

    found, pool_k, pool_t = descent_sweep(problem, allowed, lambdas, coefs, bar)
    L = len(lambdas)
    S = len(DESCENT_STARTS)
    names = [f"{name} (lambda={lam:g})" for name in DESCENT_STARTS for lam in lambdas]
    names += [f"descent (lambda={lam:g})" for lam in lambdas]
    methods = [START_METHODS[name][0] for name in DESCENT_STARTS for _ in lambdas] + ["descent"] * L
    minimisers = [START_METHODS[name][1] for name in DESCENT_STARTS for _ in lambdas] + ["exact"] * L
    pool_lambdas = list(lambdas) * (S + 1)
    it_k, it_t = iterative_configs(problem, allowed, coefs)[:2]
    pool_k = np.concatenate([pool_k, it_k])
    pool_t = np.concatenate([pool_t, it_t])
    names += [f"iterative (lambda={lam:g})" for lam in lambdas]
    methods += ["iterative"] * L
    minimisers += ["exact"] * L
    pool_lambdas += list(lambdas)
    if starts is not None:
        extra = [c for c in (starts.configs if hasattr(starts, "configs") else starts)]
        for c in extra:
            if not isinstance(c, Config) or c.n_positions != problem.shape[0]:
                raise ValueError("starts must be a SearchResult or Configs of this cache's positions")
            if (c.exit_types[c.enabled] >= 0).any() and not allowed[c.enabled, c.exit_types[c.enabled]].all():
                raise ValueError("a start enables an exit the search may not use (positions / exit_types)")
        if extra:
            pool_k = np.concatenate([pool_k, np.array([c.exit_types for c in extra], np.int64)])
            pool_t = np.concatenate([pool_t, np.array([c.thresholds for c in extra], np.float64)])
            names += [f"given start {i}" for i in range(len(extra))]
            methods += ["given"] * len(extra)
            minimisers += ["exact"] * len(extra)
            pool_lambdas += [np.nan] * len(extra)
    return Pool(pool_k, pool_t, names, methods, minimisers, np.asarray(pool_lambdas, np.float64), found,
                slice(S * L, S * L + L))


def _search(problem, allowed, kind, limits, lambdas, coefs, pool, bisection, n_feasible=None, n_near=None):
    """Constrained descent for every target; returns k [T, P], t [T, P], n_correct, cost_sum, feasible, names, sweeps.

    ``n_feasible`` / ``n_near``: how many of the best feasible and of the
    nearest infeasible pool configurations each target starts from
    (default :data:`FEASIBLE_STARTS`, :data:`NEAR_STARTS`).
    """
    mode, _ = _KINDS[kind]
    pool_k, pool_t, pool_names = pool.exit_types, pool.thresholds, pool.names
    P = problem.shape[0]
    T = len(limits)
    nc, cs = kernels.counts_of_all(problem.conf, problem.pred, problem.truth, problem.final_correct, problem.seg_q,
                                   problem.exit_q, pool_k, pool_t)
    L = len(lambdas)
    rows = pool.sweep_rows
    sweep_nc, sweep_cs, sweep_k, sweep_t = nc[rows], cs[rows], pool_k[rows], pool_t[rows]
    min_correct = np.full(T, -1, np.int64)
    max_cost = np.full(T, np.iinfo(np.int64).max, np.int64)
    if mode == kernels.CHEAPEST:
        min_correct[:] = limits
        feasible = nc[None, :] >= min_correct[:, None]
        key_primary, key_secondary = cs, -nc          # lower is better
        near_primary, near_secondary = -nc, cs
    else:
        max_cost[:] = limits
        feasible = cs[None, :] <= max_cost[:, None]
        key_primary, key_secondary = -nc, cs
        near_primary, near_secondary = cs, -nc
    # Starts per target: the best feasible pool configurations (distinct counts),
    # the nearest infeasible ones that beat them on the target, and one slot
    # for the bisection's result (else a copy of the best; copies are skipped).
    n_feasible = FEASIBLE_STARTS if n_feasible is None else n_feasible
    n_near = NEAR_STARTS if n_near is None else n_near
    S = n_feasible + n_near + 1
    starts_k = np.empty((S, T, P), np.int64)
    starts_t = np.empty((S, T, P), np.float64)
    names = [[""] * T for _ in range(S)]
    order_best = np.lexsort((key_secondary, key_primary))      # best first by the target's key
    order_near = np.lexsort((near_secondary, near_primary))    # closest to feasibility first
    for j in range(T):
        ok = feasible[j]
        chosen = _distinct((int(i) for i in order_best if ok[i]), nc, cs, n_feasible)
        if not chosen:
            chosen = _distinct((int(i) for i in order_near), nc, cs, 1)
        best = chosen[0]
        near = _distinct((int(i) for i in order_near if not ok[i] and (
            key_primary[i] < key_primary[best] or (
                key_primary[i] == key_primary[best] and key_secondary[i] < key_secondary[best]))), nc, cs, n_near)
        picks = chosen + [best] * (n_feasible - len(chosen)) + near + [best] * (n_near - len(near)) + [best]
        for s, i in enumerate(picks):
            starts_k[s, j] = pool_k[i]
            starts_t[s, j] = pool_t[i]
            names[s][j] = pool_names[i]
    if bisection > 0 and L > 1:
        _bisect(problem, allowed, mode, lambdas, coefs, sweep_k, sweep_t, sweep_nc, sweep_cs, min_correct, max_cost,
                bisection, starts_k, starts_t, names)
    args = kernel_args(problem, allowed)
    k, t, n_correct, cost_sum, ok, start, sweeps = kernels.constrained(*args, mode, min_correct, max_cost, starts_k,
                                                                       starts_t)
    start_names = [names[s][j] if s >= 0 else "" for j, s in enumerate(start)]
    return k, t, n_correct, cost_sum, ok, start_names, sweeps


def _distinct(indices, nc, cs, n):
    """The first ``n`` of ``indices`` with pairwise different (n_correct, cost_sum)."""
    out, seen = [], set()
    for i in indices:
        key = (int(nc[i]), int(cs[i]))
        if key not in seen:
            seen.add(key)
            out.append(i)
            if len(out) == n:
                break
    return out


def _bisect(problem, allowed, mode, lambdas, coefs, sweep_k, sweep_t, sweep_nc, sweep_cs, min_correct, max_cost,
            steps, starts_k, starts_t, names):
    """Lagrangian bisection on lambda between the sweep results that bracket each target; fills the last start."""
    T = len(min_correct)
    P = problem.shape[0]
    order = np.argsort(lambdas, kind="stable")
    lam_sorted = lambdas[order]
    if mode == kernels.CHEAPEST:
        ok = sweep_nc[order][None, :] >= min_correct[:, None]
    else:
        ok = sweep_cs[order][None, :] <= max_cost[:, None]
    lo = np.full(T, -1)
    hi = np.full(T, -1)
    for j in range(T):
        feas = np.flatnonzero(ok[j])
        if feas.size == 0:
            continue
        # cheapest: accuracy grows with lambda -> the first feasible lambda and the one before it;
        # most accurate: cost grows with lambda -> the last feasible lambda and the one after it
        i = int(feas[0]) if mode == kernels.CHEAPEST else int(feas[-1])
        other = i - 1 if mode == kernels.CHEAPEST else i + 1
        if 0 <= other < len(lam_sorted) and not ok[j, other]:
            lo[j], hi[j] = min(i, other), max(i, other)
    active = np.flatnonzero(lo >= 0)
    if active.size == 0:
        return
    lam_lo = lam_sorted[lo[active]].astype(np.float64)
    lam_hi = lam_sorted[hi[active]].astype(np.float64)
    k_lo = sweep_k[order][lo[active]].copy()
    t_lo = sweep_t[order][lo[active]].copy()
    k_hi = sweep_k[order][hi[active]].copy()
    t_hi = sweep_t[order][hi[active]].copy()
    best_k = np.full((active.size, P), -2, np.int64)
    best_t = np.full((active.size, P), np.nan)
    best_lam = np.full(active.size, np.nan)
    for _ in range(steps):
        lam_mid = 0.5 * (lam_lo + lam_hi)
        coefs_mid = problem.coefficient_table(lam_mid)
        k2, t2, _, nc2, cs2, _, _ = descend(problem, allowed, coefs_mid, np.stack([k_lo, k_hi]),
                                            np.stack([t_lo, t_hi]))
        if mode == kernels.CHEAPEST:
            feasible = nc2 >= min_correct[active]
            to_hi = feasible   # feasible side is the high-lambda one
        else:
            feasible = cs2 <= max_cost[active]
            to_hi = ~feasible  # infeasible side is the high-lambda one
        for i in range(active.size):
            if feasible[i]:
                best_k[i], best_t[i], best_lam[i] = k2[i], t2[i], lam_mid[i]
            if to_hi[i]:
                lam_hi[i], k_hi[i], t_hi[i] = lam_mid[i], k2[i], t2[i]
            else:
                lam_lo[i], k_lo[i], t_lo[i] = lam_mid[i], k2[i], t2[i]
    for i, j in enumerate(active):
        if not np.isnan(best_lam[i]):
            starts_k[-1, j] = best_k[i]
            starts_t[-1, j] = best_t[i]
            names[-1][j] = f"bisection (lambda={best_lam[i]:.6g})"


def _target_result(problem, allowed, kind, targets, found_rows, seconds, extra_md):
    from .result import SearchResult

    k, t, n_correct, cost_sum, ok, start_names, sweeps = found_rows
    configs = [Config(k[j], t[j]) for j in range(len(targets))]
    _, column = _KINDS[kind]
    metadata = {
        "target": column,
        "allowed_positions": [int(p) for p in np.flatnonzero(allowed.any(axis=1))],
        "allowed_exit_types": [int(kk) for kk in np.flatnonzero(allowed.any(axis=0))],
        **extra_md,
    }
    result = SearchResult.from_configs(
        problem, configs, [np.nan] * len(targets), method=kind, threshold="exact",
        seconds=np.full(len(targets), seconds / max(len(targets), 1)),
        extra={"target": [float(v) for v in targets], "feasible": [bool(v) for v in ok], "start": start_names,
               "sweeps": [int(v) for v in sweeps]},
        metadata=metadata,
    )
    return result


def _run_target(kind, cache, values, *, lambdas, objective, costs, positions, exit_types, starts, bisection,
                progress):
    from .search import _progress

    if isinstance(bisection, bool) or not isinstance(bisection, (int, np.integer)) or bisection < 0:
        raise ValueError(f"bisection must be a non-negative integer, got {bisection!r}")
    problem, allowed, lambdas, coefs = _prepare(cache, objective, costs, positions, exit_types, lambdas,
                                                TARGET_LAMBDAS)
    if kind == "cheapest":
        targets = _check_targets(values, "max_drop", 0.0, 1.0)
        limits = np.array([problem.min_correct(v) for v in targets], np.int64)
    else:
        targets = _check_targets(values, "max_cost", 0.0, np.inf, low_open=True)
        limits = np.array([problem.max_cost_sum(v) for v in targets], np.int64)
    compile_kernels(("targets",))  # a one-off, not search time
    started = time.perf_counter()
    bar = _progress(progress, len(lambdas), f"{kind}: descent sweep")
    try:
        pool = _pool(problem, allowed, lambdas, coefs, starts, bar)
    finally:
        if bar is not None:
            bar.close()
    rows = _search(problem, allowed, kind, limits, lambdas, coefs, pool, int(bisection))
    seconds = time.perf_counter() - started
    md = {"sweep_lambdas": [float(v) for v in lambdas], "bisection": int(bisection), "search_seconds": seconds}
    return _target_result(problem, allowed, kind, targets, rows, seconds, md)


def cheapest(cache, max_drop, *, lambdas=None, objective="paper", costs=None, positions=None, exit_types=None,
             starts=None, bisection=BISECTION_STEPS, progress=None):
    """The configuration of least cost C (Eq. 11) whose accuracy drop 1 - A (Eq. 10) is at most ``max_drop``.

    Parameters
    ----------
    cache : ExitCache or path
        The search cache.
    max_drop : float or list of float in [0, 1)
        Allowed drop of A relative to the original model (e.g. 0.005 for
        0.5 %), one row per value. The count of correct predictions must be
        at least ``ceil(M A_ori (1 - max_drop))``.
    lambdas : array-like of float, optional
        Lambda grid of the seeding descent and iterative sweeps (default 0,
        0.01, ..., 1).
    objective : {"paper", "normalized"}
        Scale of f for the seeding sweep and the bisection (the target itself
        does not depend on it).
    costs : None, Costs or path
        Cost model (default: the cache's MACs; a latency profile makes C a
        relative latency).
    positions, exit_types : iterable of int or str, optional
        Restrict the exits that may be enabled, as in :func:`dyce_search.run`.
    starts : SearchResult or list of Config, optional
        Further configurations to start from (e.g. another method's sweep, or
        a :func:`front`, with a coarser ``lambdas`` to save the sweep).
    bisection : int
        Lagrangian bisection steps on lambda per target (0 to skip).
    progress : bool, optional
        tqdm bar; default: when stderr is a terminal.

    Returns
    -------
    SearchResult
        One row per ``max_drop`` (``lambda`` is NaN, ``method`` is
        ``"cheapest"``) with the usual metrics and ``target`` (the value of
        ``max_drop``), ``feasible`` (always True: the original model has no
        drop), ``start`` (where the winning descent started) and ``sweeps``.
        At least as cheap as every configuration of a lambda sweep of the
        descent, the iterative and single-pass searches (both minimisers) and
        the baseline on ``lambdas`` that meets the drop.

    Raises
    ------
    ValueError
        ``max_drop`` outside [0, 1), bad lambdas, positions, exit types,
        ``bisection`` or objective.
    """
    return _run_target("cheapest", cache, max_drop, lambdas=lambdas, objective=objective, costs=costs,
                       positions=positions, exit_types=exit_types, starts=starts, bisection=bisection,
                       progress=progress)


def most_accurate(cache, max_cost, *, lambdas=None, objective="paper", costs=None, positions=None, exit_types=None,
                  starts=None, bisection=BISECTION_STEPS, progress=None):
    """The configuration of highest A (Eq. 10) whose cost C (Eq. 11) is at most ``max_cost``.

    Parameters are those of :func:`cheapest`, with ``max_cost`` (float or
    list of float > 0) the allowed cost relative to the original model
    (e.g. 0.6 for 60 % of its MACs, or of its latency with a latency profile).

    Returns
    -------
    SearchResult
        One row per ``max_cost``; ``feasible`` is False where no configuration
        found fits the budget (then the row holds the cheapest one found).
    """
    return _run_target("most_accurate", cache, max_cost, lambdas=lambdas, objective=objective, costs=costs,
                       positions=positions, exit_types=exit_types, starts=starts, bisection=bisection,
                       progress=progress)


def front(cache, *, lambdas=None, drops=None, objective="paper", costs=None, positions=None, exit_types=None,
          progress=None):
    """A dense non-dominated accuracy/cost front of every configuration the search meets.

    1. A descent sweep and the paper's iterative search over ``lambdas``;
       the pool holds every descent start (the single-pass results with both
       minimisers and the baseline at every lambda, the original model),
       every descent result and every iterative result.
    2. :func:`cheapest` at the exact accuracy of every non-dominated pool
       configuration (so each is matched or beaten by its constrained
       polish) and at ``drops``.
    3. Everything merged and filtered to the non-dominated configurations.

    Parameters
    ----------
    cache : ExitCache or path
    lambdas : array-like of float, optional
        Lambda grid of the descent sweep (default 0, 0.01, ..., 1).
    drops : array-like of float, optional
        Further accuracy drops to target (default: 50 levels from 0 to the
        largest drop among the sweep's configurations).
    objective, costs, positions, exit_types, progress
        As in :func:`cheapest`.

    Returns
    -------
    SearchResult
        The non-dominated rows (lower ``rel_cost``, higher ``rel_accuracy``),
        sorted by ``rel_cost``. ``method`` says where a row comes from:
        ``"descent"`` (a sweep result, with its lambda), ``"cheapest"``
        (a target, lambda NaN, ``target`` the drop it was searched for), or
        another pool configuration (``"iterative"``, ``"single_pass"``, ...;
        rarely left undominated).
        ``metadata["method"]`` is ``"front"``.
    """
    from .result import SearchResult
    from .search import _progress

    problem, allowed, lambdas, coefs = _prepare(cache, objective, costs, positions, exit_types, lambdas,
                                                FRONT_LAMBDAS)
    compile_kernels(("targets",))  # a one-off, not search time
    started = time.perf_counter()
    bar = _progress(progress, len(lambdas), "front: descent sweep")
    try:
        pool = _pool(problem, allowed, lambdas, coefs, None, bar)
    finally:
        if bar is not None:
            bar.close()
    pool_k, pool_t = pool.exit_types, pool.thresholds
    nc, cs = kernels.counts_of_all(problem.conf, problem.pred, problem.truth, problem.final_correct, problem.seg_q,
                                   problem.exit_q, pool_k, pool_t)
    n_head = max(problem.n_head_correct, 1)
    if drops is None:
        largest = float(np.clip(1.0 - nc.min() / n_head, 0.0, 1.0 - 1e-9))
        drops = np.linspace(0.0, largest, FRONT_DROPS)
    drops = _check_targets(drops, "drops", 0.0, 1.0)
    # every non-dominated pool configuration's own accuracy is a target too
    order = np.lexsort((-nc, cs))
    best = -1
    levels = set()
    for i in order:
        if nc[i] > best:
            best = nc[i]
            levels.add(int(nc[i]))
    levels |= {problem.min_correct(v) for v in drops}
    limits = np.array(sorted(levels), np.int64)
    # one feasible and one infeasible start per level: the levels are dense, and each pool
    # configuration is the feasible start of its own level, so its polish dominates it
    rows = _search(problem, allowed, "cheapest", limits, lambdas, coefs, pool, 0, n_feasible=1, n_near=1)
    seconds = time.perf_counter() - started
    k, t, _, _, _, start_names, sweeps = rows
    configs = [Config(a, b) for a, b in zip(pool_k, pool_t)] + [Config(k[j], t[j]) for j in range(len(limits))]
    n_pool = len(pool_k)
    merged = SearchResult.from_configs(
        problem, configs, list(pool.lambdas) + [np.nan] * len(limits), method="descent", threshold="exact",
        seconds=np.full(len(configs), seconds / len(configs)),
        extra={
            "target": [np.nan] * n_pool + [float(1.0 - v / n_head) for v in limits],
            "start": [""] * n_pool + start_names,
            "sweeps": [0] * n_pool + [int(v) for v in sweeps],
        },
        metadata={
            "allowed_positions": [int(p) for p in np.flatnonzero(allowed.any(axis=1))],
            "allowed_exit_types": [int(kk) for kk in np.flatnonzero(allowed.any(axis=0))],
            "sweep_lambdas": [float(v) for v in lambdas],
            "search_seconds": seconds,
        },
    )
    table = merged.table
    table["method"] = pool.methods + ["cheapest"] * len(limits)
    table["threshold"] = pool.minimisers + ["exact"] * len(limits)
    sweep_rows = pool.sweep_rows
    table.loc[table.index[sweep_rows], "start"] = list(pool.sweep.columns["start"])
    table.loc[table.index[sweep_rows], "sweeps"] = list(pool.sweep.columns["sweeps"])
    # Prefer the sweep's and the targets' rows over identical rows from elsewhere.
    rank = np.array([0 if m == "descent" else 1 if m == "cheapest" else 2 for m in table["method"]])
    first = np.lexsort((np.arange(len(rank)), rank))
    reordered = SearchResult(table.iloc[first], [merged.configs[i] for i in first], dict(merged.metadata, method="front"))
    return reordered.pareto()


__all__ = ["cheapest", "most_accurate", "front", "TARGET_LAMBDAS", "FRONT_LAMBDAS", "FRONT_DROPS", "BISECTION_STEPS"]
