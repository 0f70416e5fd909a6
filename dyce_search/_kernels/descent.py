"""Kernels of the exact coordinate descent (``method="descent"``) and of the budget targets.

A *polish* takes a configuration and sweeps the positions from the last to
the first, re-choosing at each position the best of "none" and every allowed
exit type with its exactly minimised threshold given all other positions
(Eq. 13), and repeats until a full sweep changes nothing. Every accepted
change lowers f strictly, so a polish ends, and it ends in a coordinate-wise
optimum: no single-position change lowers f (Algorithm 2's local optimality).

Sweeping from the last position matters: going forward, the first position
sees every later one disabled and tends to send almost every sample out
(the greedy trap of Algorithm 3); going backward, each position is chosen
knowing where its samples would continue.

A sweep skips a candidate whose slack (a lower bound on the change of f it
could bring, maintained by :func:`~dyce_search._kernels.state.apply_change`)
shows that it cannot lower f; skipping never changes the result.

The constrained polish does the same for "least cost with at least
``min_correct`` correct predictions" or "most correct predictions with a
cost sum of at most ``max_cost``", comparing (cost, -correct) or
(-correct, cost) lexicographically.

Exit rule: the float64 form of :mod:`dyce_search.exit_rule`, ``np.float64(conf)
>= t`` (no preparation).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .search import SLACK_TOLERANCE, set_position, shift_own_row
from .state import config_state, pack_continuation, saved_costs, totals
from .thresholds import LAST_BIT, SAMPLE_BITS, SAMPLE_MASK, between, first_reaching, objective_value, scan_thresholds

#: Target kinds of :func:`polish_constrained`.
CHEAPEST = 0
MOST_ACCURATE = 1


@njit(cache=True)
def canonical_thresholds(conf, k_cfg, t_cfg):
    """Move every threshold strictly inside its gap among the samples that reach its position (in place).

    A threshold t at p can be replaced by any value in (c_lo, c_hi], c_hi the
    lowest confidence >= t and c_lo the highest one < t among the samples
    reaching p, without changing where any sample leaves; the midpoint is the
    one that survives recomputed confidences best (see
    :func:`~dyce_search._kernels.thresholds.place_threshold`). A threshold
    that lets nobody out stays as it is (it is above every such confidence).
    """
    P, K, M = conf.shape
    alive = np.ones(M, np.bool_)
    for p in range(P):
        k = k_cfg[p]
        if k < 0:
            continue
        t = t_cfg[p]
        high = np.inf
        low = -np.inf
        for m in range(M):
            if alive[m]:
                c = np.float64(conf[p, k, m])
                if c >= t:
                    if c < high:
                        high = c
                elif c > low:
                    low = c
        if high < np.inf:
            t = between(high, low if low > -np.inf else 0.0)
            t_cfg[p] = t
        for m in range(M):
            if alive[m] and np.float64(conf[p, k, m]) >= t:
                alive[m] = False


@njit(cache=True)
def polish(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, a0, a_correct, a_cost_q,
           k_cfg, t_cfg):
    """Exact coordinate descent from (k_cfg, t_cfg), changed in place; returns (f, n_correct, cost_sum, sweeps).

    The start's thresholds are first made canonical (:func:`canonical_thresholds`,
    f unchanged). Ties at a position go to none, then the smallest type index.
    An enabled exit that no sample reaches is removed (f unchanged on the
    cache; on new data it would let samples out where the search never
    measured it).
    """
    P, K, M = conf.shape
    canonical_thresholds(conf, k_cfg, t_cfg)
    code = np.empty(M, np.int16)
    e, e2, c1, c2, cum, n_correct, cost_sum = config_state(conf, pred, truth, final_correct, k_cfg, t_cfg,
                                                           seg_q, exit_q)
    f_cur = objective_value(a0, a_correct, a_cost_q, n_correct, cost_sum)
    slack = np.full((P, K + 1), -np.inf)
    sweeps = 0
    while True:
        sweeps += 1
        changed = False
        for back in range(P):
            p = P - 1 - back
            if not np.any(allowed[p]):
                continue
            needed = k_cfg[p] >= 0 and slack[p, K] <= SLACK_TOLERANCE
            for k in range(K):
                if allowed[p, k] and slack[p, k] <= SLACK_TOLERANCE:
                    needed = True
            if not needed:
                continue
            n_reach, n_correct0, cost_sum0 = pack_continuation(p, e, e2, c1, c2, cum, k_cfg[p], exit_q, code)
            best_f = f_cur
            best_k = -2
            best_i = -1
            if k_cfg[p] >= 0:
                f = objective_value(a0, a_correct, a_cost_q, n_correct0, cost_sum0)
                slack[p, K] = f - f_cur
                # An exit nobody reaches changes nothing here but would fire on new data: drop it.
                if f < best_f or n_reach == 0:
                    best_f = f
                    best_k = -1
            saved = saved_costs(cum, p)
            for k in range(K):
                if not allowed[p, k] or slack[p, k] > SLACK_TOLERANCE:
                    continue
                if n_reach == 0:
                    slack[p, k] = 2.0 * SLACK_TOLERANCE  # no candidate until samples reach p
                    continue
                f, i = scan_thresholds(keys[p, k], n_valid[p, k], code, saved, n_reach, n_correct0,
                                       cost_sum0 + n_reach * exit_q[p, k], a0, a_correct, a_cost_q)
                slack[p, k] = f - f_cur
                if f < best_f:
                    best_f = f
                    best_k = k
                    best_i = i
            if best_k == -2:
                continue
            k_before = k_cfg[p]
            n_correct, cost_sum = set_position(keys, n_valid, conf, pred, truth, final_correct, exit_q, code, k_cfg,
                                               t_cfg, p, best_k, best_i, e, e2, c1, c2, cum, a_correct, a_cost_q,
                                               slack)
            f_new = objective_value(a0, a_correct, a_cost_q, n_correct, cost_sum)
            shift_own_row(slack, p, k_before, best_k, f_cur, f_new)
            f_cur = f_new
            changed = True
        if not changed:
            break
    return f_cur, n_correct, cost_sum, sweeps


@njit(parallel=True, cache=True)
def descent(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, coefs, start_k, start_t):
    """Polish every start of every lambda and keep the lowest f (the first start on ties).

    Parameters
    ----------
    keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, coefs
        As for :func:`dyce_search._kernels.search.single_pass`.
    start_k : int64 [S, L, P]
    start_t : float64 [S, L, P]
        Start configurations per lambda.

    Returns
    -------
    k_out : int64 [L, P]
    t_out : float64 [L, P]
    f_out : float64 [L]
    n_correct, cost_sum : int64 [L]
    start : int64 [L]
        Index of the start whose polish won.
    sweeps : int64 [L]
        Sweeps of all polishes together.
    """
    S, L, P = start_k.shape
    k_out = np.empty((L, P), np.int64)
    t_out = np.empty((L, P), np.float64)
    f_out = np.empty(L)
    nc_out = np.empty(L, np.int64)
    cs_out = np.empty(L, np.int64)
    start_out = np.empty(L, np.int64)
    sweeps_out = np.zeros(L, np.int64)
    for j in prange(L):
        a0 = coefs[j, 0]
        ac = coefs[j, 1]
        aq = coefs[j, 2]
        f_out[j] = np.inf
        k = np.empty(P, np.int64)
        t = np.empty(P, np.float64)
        for s in range(S):
            k[:] = start_k[s, j]
            t[:] = start_t[s, j]
            f, nc, cs, sw = polish(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, a0, ac, aq,
                                   k, t)
            sweeps_out[j] += sw
            if f < f_out[j]:
                f_out[j] = f
                nc_out[j] = nc
                cs_out[j] = cs
                start_out[j] = s
                k_out[j] = k
                t_out[j] = t
    return k_out, t_out, f_out, nc_out, cs_out, start_out, sweeps_out


@njit(parallel=True, cache=True)
def neighbour_starts(n_correct, cost_sum, f, coefs, window):
    """For every lambda, the configuration of another lambda within ``window`` grid steps that is strictly better here.

    f is affine in the two counts, so any configuration is scored at any
    lambda in O(1). Ties go to the nearest grid index, then the lower one.

    Returns
    -------
    source : int64 [L]
        Index of that lambda's configuration, -1 if none beats ``f[j]``.
    """
    L = coefs.shape[0]
    source = np.full(L, -1, np.int64)
    for j in prange(L):
        best = f[j]
        for dist in range(1, window + 1):
            for i in (j - dist, j + dist):
                if i < 0 or i >= L:
                    continue
                v = objective_value(coefs[j, 0], coefs[j, 1], coefs[j, 2], n_correct[i], cost_sum[i])
                if v < best:
                    best = v
                    source[j] = i
    return source


@njit(cache=True)
def _better(mode, nc_a, cs_a, nc_b, cs_b):
    """Whether (nc_a, cs_a) beats (nc_b, cs_b) lexicographically for the target kind."""
    if mode == CHEAPEST:
        return cs_a < cs_b or (cs_a == cs_b and nc_a > nc_b)
    return nc_a > nc_b or (nc_a == nc_b and cs_a < cs_b)


@njit(cache=True)
def _feasible(mode, nc, cs, min_correct, max_cost):
    if mode == CHEAPEST:
        return nc >= min_correct
    return cs <= max_cost


@njit(cache=True)
def scan_constrained(keys, n_valid, code, saved, n_reach, n_correct0, cost_base, mode, min_correct, max_cost):
    """The best feasible threshold of one exit for a budget target: one pass over its presorted column.

    Like :func:`~dyce_search._kernels.thresholds.scan_thresholds`, but among
    the candidate thresholds that satisfy the constraint it keeps the one
    with the best (cost, -correct) (``CHEAPEST``) or (-correct, cost)
    (``MOST_ACCURATE``), the largest threshold on ties.

    Returns
    -------
    n_correct, cost_sum : int64
        Totals at the best feasible candidate.
    best_i : int64
        Index into ``keys`` of its run end, -1 if no candidate is feasible.
    """
    sentinel = 2 * (saved.shape[0] - 1)
    best_i = -1
    best_nc = np.int64(0)
    best_cs = np.int64(0)
    if n_reach == 0:
        return best_nc, best_cs, best_i
    start = first_reaching(keys, n_valid, code, sentinel)
    d_correct = np.int64(0)
    d_cost = np.int64(0)
    for i in range(start, n_valid):
        key = keys[i]
        c = np.int64(code[key & SAMPLE_MASK])
        r = np.int64(c < sentinel)
        d_correct += r * (((key >> SAMPLE_BITS) & 1) - (c & 1))
        d_cost += saved[c >> 1]
        if key & LAST_BIT:
            nc = n_correct0 + d_correct
            cs = cost_base - d_cost
            if _feasible(mode, nc, cs, min_correct, max_cost) and (
                    best_i < 0 or _better(mode, nc, cs, best_nc, best_cs)):
                best_i = i
                best_nc = nc
                best_cs = cs
    return best_nc, best_cs, best_i


@njit(cache=True)
def polish_constrained(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, mode, min_correct,
                       max_cost, k_cfg, t_cfg):
    """Coordinate descent for a budget target from a start, changed in place.

    Sweeps the positions backward; at each one takes the best feasible of
    none and every allowed exit type with its best feasible threshold, if it
    strictly beats the current configuration ((cost, -correct) for
    ``CHEAPEST``, (-correct, cost) for ``MOST_ACCURATE``); stops when a full
    sweep changes nothing. An infeasible start is first moved towards
    feasibility by the same sweeps on the violated quantity alone.

    Returns
    -------
    n_correct, cost_sum : int64
    sweeps : int64
    """
    P, K, M = conf.shape
    canonical_thresholds(conf, k_cfg, t_cfg)
    code = np.empty(M, np.int16)
    e, e2, c1, c2, cum, n_correct, cost_sum = config_state(conf, pred, truth, final_correct, k_cfg, t_cfg,
                                                           seg_q, exit_q)
    no_slack = np.zeros((P, K + 1))
    sweeps = 0
    while True:
        # Infeasible: pursue the violated quantity without a constraint
        # (cheapest: most correct; most accurate: least cost) until feasible.
        feasible = _feasible(mode, n_correct, cost_sum, min_correct, max_cost)
        step_mode = mode if feasible else 1 - mode
        lo_correct = min_correct if step_mode == mode else np.int64(-1)
        hi_cost = max_cost if step_mode == mode else np.iinfo(np.int64).max
        sweeps += 1
        changed = False
        for back in range(P):
            p = P - 1 - back
            if not np.any(allowed[p]):
                continue
            n_reach, n_correct0, cost_sum0 = pack_continuation(p, e, e2, c1, c2, cum, k_cfg[p], exit_q, code)
            best_nc = n_correct
            best_cs = cost_sum
            best_k = -2
            best_i = -1
            if k_cfg[p] >= 0 and (n_reach == 0 or (
                    _feasible(step_mode, n_correct0, cost_sum0, lo_correct, hi_cost)
                    and _better(step_mode, n_correct0, cost_sum0, best_nc, best_cs))):
                best_nc = n_correct0
                best_cs = cost_sum0
                best_k = -1
            saved = saved_costs(cum, p)
            for k in range(K):
                if not allowed[p, k]:
                    continue
                nc, cs, i = scan_constrained(keys[p, k], n_valid[p, k], code, saved, n_reach, n_correct0,
                                             cost_sum0 + n_reach * exit_q[p, k], step_mode, lo_correct, hi_cost)
                if i >= 0 and _better(step_mode, nc, cs, best_nc, best_cs):
                    best_nc = nc
                    best_cs = cs
                    best_k = k
                    best_i = i
            if best_k == -2:
                continue
            n_correct, cost_sum = set_position(keys, n_valid, conf, pred, truth, final_correct, exit_q, code, k_cfg,
                                               t_cfg, p, best_k, best_i, e, e2, c1, c2, cum, 0.0, 0.0, no_slack)
            changed = True
            if not feasible and _feasible(mode, n_correct, cost_sum, min_correct, max_cost):
                break  # feasible now: continue with the target itself
        if not changed:
            if feasible:
                break
            if not _feasible(mode, n_correct, cost_sum, min_correct, max_cost):
                break  # cannot be made feasible by single-position changes
    return n_correct, cost_sum, sweeps


@njit(parallel=True, cache=True)
def constrained(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, mode, min_correct, max_cost,
                start_k, start_t):
    """:func:`polish_constrained` of every start of every target; keeps the best feasible result per target.

    Parameters
    ----------
    mode : int
        ``CHEAPEST`` or ``MOST_ACCURATE``.
    min_correct, max_cost : int64 [T]
        The constraint of each target (the other one is unused).
    start_k : int64 [S, T, P]
    start_t : float64 [S, T, P]

    Returns
    -------
    k_out : int64 [T, P]
    t_out : float64 [T, P]
    n_correct, cost_sum : int64 [T]
    feasible : bool [T]
    start : int64 [T]
    sweeps : int64 [T]
    """
    S, T, P = start_k.shape
    k_out = np.empty((T, P), np.int64)
    t_out = np.empty((T, P), np.float64)
    nc_out = np.empty(T, np.int64)
    cs_out = np.empty(T, np.int64)
    feasible_out = np.zeros(T, np.bool_)
    start_out = np.full(T, -1, np.int64)
    sweeps_out = np.zeros(T, np.int64)
    for j in prange(T):
        k = np.empty(P, np.int64)
        t = np.empty(P, np.float64)
        have = False
        for s in range(S):
            repeat = False
            for s2 in range(s):
                if _same_start(start_k[s, j], start_t[s, j], start_k[s2, j], start_t[s2, j]):
                    repeat = True
                    break
            if repeat:
                continue
            k[:] = start_k[s, j]
            t[:] = start_t[s, j]
            nc, cs, sw = polish_constrained(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed,
                                            mode, min_correct[j], max_cost[j], k, t)
            sweeps_out[j] += sw
            ok = _feasible(mode, nc, cs, min_correct[j], max_cost[j])
            if ok and feasible_out[j]:
                take = _better(mode, nc, cs, nc_out[j], cs_out[j])
            elif ok:
                take = True
            elif feasible_out[j]:
                take = False
            else:
                # neither feasible: keep the one closest to the constraint
                take = not have or _better(1 - mode, nc, cs, nc_out[j], cs_out[j])
            if take:
                have = True
                feasible_out[j] = ok
                nc_out[j] = nc
                cs_out[j] = cs
                start_out[j] = s
                k_out[j] = k
                t_out[j] = t
    return k_out, t_out, nc_out, cs_out, feasible_out, start_out, sweeps_out


@njit(cache=True)
def _same_start(k_a, t_a, k_b, t_b):
    for p in range(k_a.shape[0]):
        if k_a[p] != k_b[p] or (k_a[p] >= 0 and t_a[p] != t_b[p]):
            return False
    return True


@njit(cache=True)
def counts_of(conf, pred, truth, final_correct, seg_q, exit_q, k_cfg, t_cfg):
    """(n_correct, cost_sum) of one configuration."""
    e, e2, c1, c2, cum, n_correct, cost_sum = config_state(conf, pred, truth, final_correct, k_cfg, t_cfg,
                                                           seg_q, exit_q)
    return n_correct, cost_sum


@njit(parallel=True, cache=True)
def counts_of_all(conf, pred, truth, final_correct, seg_q, exit_q, k_cfgs, t_cfgs):
    """int64 [N] n_correct and cost_sum of N configurations."""
    N = k_cfgs.shape[0]
    nc = np.empty(N, np.int64)
    cs = np.empty(N, np.int64)
    for i in prange(N):
        nc[i], cs[i] = counts_of(conf, pred, truth, final_correct, seg_q, exit_q, k_cfgs[i], t_cfgs[i])
    return nc, cs


__all__ = ["CHEAPEST", "MOST_ACCURATE", "canonical_thresholds", "polish", "descent", "neighbour_starts",
           "scan_constrained", "polish_constrained", "constrained", "counts_of", "counts_of_all", "totals"]
