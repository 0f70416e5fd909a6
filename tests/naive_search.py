"""Brute-force references for threshold minimisation and the searches (plain Python loops).

Objective values are computed from scratch for every configuration tried:
per-sample exits by Algorithm 1, ``n_correct`` and the quantised
``cost_sum`` as Python integers, then f with the same float64 expression as
the kernels (``a0 + a_correct * n_correct + a_cost_q * cost_sum``), so the
references and the kernels agree bit for bit. ``tests/naive.py``'s Eq. 12
(``f_paper``) cross-checks these values to rounding.

``prob`` is a :class:`dyce_search.problem.Problem` (quantised costs and
objective coefficients); only its plain arrays are used here. The paper's
bounded minimiser is scipy's own ``minimize_scalar`` here, the reference for
the package's port of it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def counts(prob, k_cfg, t_cfg):
    """(n_correct, cost_sum) of a configuration, by Algorithm 1 sample by sample."""
    P, K, M = prob.conf.shape
    n_correct = 0
    cost_sum = 0
    for m in range(M):
        cost = 0
        out = P
        for p in range(P):
            cost += int(prob.seg_q[p])
            k = int(k_cfg[p])
            if k < 0:
                continue
            cost += int(prob.exit_q[p, k])
            if float(prob.conf[p, k, m]) >= float(t_cfg[p]):
                out = p
                break
        if out == P:
            cost += int(prob.seg_q[P])
            ok = int(prob.final_correct[m])
        else:
            ok = int(prob.pred[out, int(k_cfg[out]), m] == prob.truth[m])
        n_correct += ok
        cost_sum += cost
    return n_correct, cost_sum


def value(prob, lam, k_cfg, t_cfg):
    """f of a configuration (Eq. 12 on prob's objective scale)."""
    a0, a_correct, a_cost_q = prob.coefficients(lam)
    n_correct, cost_sum = counts(prob, k_cfg, t_cfg)
    return a0 + a_correct * float(n_correct) + a_cost_q * float(cost_sum)


def reaching(prob, k_cfg, t_cfg, p):
    """Samples that reach early position p (leave at no enabled position before it)."""
    P, K, M = prob.conf.shape
    out = []
    for m in range(M):
        if all(
            int(k_cfg[q]) < 0 or not float(prob.conf[q, int(k_cfg[q]), m]) >= float(t_cfg[q]) for q in range(p)
        ):
            out.append(m)
    return out


def candidate_thresholds(prob, k_cfg, t_cfg, p, k):
    """Distinct confidences (float64) of exit (p, k) on the samples reaching p, decreasing."""
    vals = {float(prob.conf[p, k, m]) for m in reaching(prob, k_cfg, t_cfg, p)}
    return sorted((v for v in vals if not math.isnan(v)), reverse=True)


def between(high, low):
    """A float strictly between low < high: the midpoint, else the float just below high."""
    if not low < high:
        return high
    mid = (high + low) / 2
    return mid if low < mid < high else math.nextafter(high, -math.inf)


def placed(candidates, t):
    """Candidate t moved halfway to the next lower candidate (0 below the last one)."""
    i = candidates.index(t)
    return between(t, candidates[i + 1] if i + 1 < len(candidates) else 0.0)


def with_change(k_cfg, t_cfg, p, k, t):
    k2 = np.array(k_cfg, np.int64).copy()
    t2 = np.array(t_cfg, np.float64).copy()
    k2[p] = k
    t2[p] = t if k >= 0 else np.nan
    return k2, t2


def minimize_exact(prob, lam, k_cfg, t_cfg, p, k):
    """(t, f): every candidate threshold tried; the largest one among equal minima, placed inside its gap."""
    candidates = candidate_thresholds(prob, k_cfg, t_cfg, p, k)
    best_t, best_f = math.nan, math.inf
    for t in candidates:
        f = value(prob, lam, *with_change(k_cfg, t_cfg, p, k, t))
        if f < best_f:
            best_t, best_f = t, f
    if math.isnan(best_t):
        return best_t, best_f
    return placed(candidates, best_t), best_f


def minimize_bounded(prob, lam, k_cfg, t_cfg, p, k):
    """(t, f) of scipy's bounded scalar minimiser on [0, 1] (the paper's), (nan, inf) if nobody reaches p."""
    from scipy.optimize import minimize_scalar

    if not reaching(prob, k_cfg, t_cfg, p):
        return math.nan, math.inf
    res = minimize_scalar(lambda t: value(prob, lam, *with_change(k_cfg, t_cfg, p, k, t)), bounds=(0.0, 1.0),
                          method="bounded")
    return float(res.x), float(res.fun)


def single_pass(prob, lam, allowed, bounded=False):
    """Algorithm 3; returns (k, t, f)."""
    P, K, _ = prob.conf.shape
    minimize = minimize_bounded if bounded else minimize_exact
    k_cfg = np.full(P, -1, np.int64)
    t_cfg = np.full(P, np.nan)
    f_min = value(prob, lam, k_cfg, t_cfg)
    for p in range(P):
        choice = None
        for k in range(K):
            if not allowed[p, k]:
                continue
            t, f = minimize(prob, lam, k_cfg, t_cfg, p, k)
            if f < f_min:
                f_min, choice = f, (k, t)
        if choice is not None:
            k_cfg, t_cfg = with_change(k_cfg, t_cfg, p, *choice)
    return k_cfg, t_cfg, f_min


def best_change(prob, lam, k_cfg, t_cfg, allowed, bounded=False):
    """Algorithm 2's inner loops: the first (p, k_c, t) in visiting order with the lowest f, and f."""
    P, K, _ = prob.conf.shape
    minimize = minimize_bounded if bounded else minimize_exact
    f_min = value(prob, lam, k_cfg, t_cfg)
    choice = None
    for p in range(P):
        if not allowed[p].any():
            continue
        if k_cfg[p] >= 0:
            f = value(prob, lam, *with_change(k_cfg, t_cfg, p, -1, math.nan))
            if f < f_min:
                f_min, choice = f, (p, -1, math.nan)
        for k in range(K):
            if not allowed[p, k]:
                continue
            t, f = minimize(prob, lam, k_cfg, t_cfg, p, k)
            if f < f_min:
                f_min, choice = f, (p, k, t)
    return choice, f_min


def iterative(prob, lam, allowed, max_rounds=None, bounded=False):
    """Algorithm 2; returns (k, t, f, rounds)."""
    P = prob.conf.shape[0]
    k_cfg = np.full(P, -1, np.int64)
    t_cfg = np.full(P, np.nan)
    rounds = 0
    while max_rounds is None or rounds < max_rounds:
        choice, _ = best_change(prob, lam, k_cfg, t_cfg, allowed, bounded)
        if choice is None:
            break
        k_cfg, t_cfg = with_change(k_cfg, t_cfg, *choice)
        rounds += 1
    return k_cfg, t_cfg, value(prob, lam, k_cfg, t_cfg), rounds


def baseline(prob, lam, allowed, k):
    """Type k at every allowed position, one shared threshold over all its distinct confidences there.

    Returns (t, f) of the best (largest t on ties, placed halfway to the next
    lower confidence), (nan, inf) if there is no candidate.
    """
    P = prob.conf.shape[0]
    on = [p for p in range(P) if allowed[p, k]]
    vals = sorted({float(prob.conf[p, k, m]) for p in on for m in range(prob.conf.shape[2])}, reverse=True)
    best_t, best_f = math.nan, math.inf
    for t in vals:
        k_cfg = np.full(P, -1, np.int64)
        t_cfg = np.full(P, np.nan)
        k_cfg[on] = k
        t_cfg[on] = t
        f = value(prob, lam, k_cfg, t_cfg)
        if f < best_f:
            best_t, best_f = t, f
    if math.isnan(best_t):
        return best_t, best_f
    return placed(vals, best_t), best_f


def improving_change(prob, lam, k_cfg, t_cfg, allowed):
    """Some single-position change (any k_c incl. none, any candidate threshold) that lowers f, else None."""
    choice, f = best_change(prob, lam, k_cfg, t_cfg, allowed)
    return choice


def position_options(prob, k_cfg, t_cfg, p, allowed):
    """Every configuration that differs from (k_cfg, t_cfg) at position p only, up to equivalent thresholds."""
    K = prob.conf.shape[1]
    out = []
    if k_cfg[p] >= 0:
        out.append(with_change(k_cfg, t_cfg, p, -1, math.nan))
    for k in range(K):
        if allowed[p, k]:
            for t in candidate_thresholds(prob, k_cfg, t_cfg, p, k):
                out.append(with_change(k_cfg, t_cfg, p, k, t))
    return out


def constrained_improvement(prob, k_cfg, t_cfg, allowed, min_correct=None, max_cost=None):
    """A single-position change that keeps the constraint and is cheaper (min_correct) or more accurate (max_cost).

    Compares (cost, -correct) for ``min_correct`` and (-correct, cost) for
    ``max_cost`` lexicographically; returns the changed configuration or None.
    """
    nc, cs = counts(prob, k_cfg, t_cfg)
    key = _target_key(min_correct, max_cost)
    for p in range(prob.conf.shape[0]):
        if not allowed[p].any():
            continue
        for k2, t2 in position_options(prob, k_cfg, t_cfg, p, allowed):
            nc2, cs2 = counts(prob, k2, t2)
            if _satisfies(nc2, cs2, min_correct, max_cost) and key(nc2, cs2) < key(nc, cs):
                return k2, t2
    return None


def _target_key(min_correct, max_cost):
    if min_correct is not None:
        return lambda nc, cs: (cs, -nc)
    return lambda nc, cs: (-nc, cs)


def _satisfies(nc, cs, min_correct, max_cost):
    if min_correct is not None:
        return nc >= min_correct
    return cs <= max_cost


def all_configurations(prob, allowed):
    """Every configuration up to equivalent thresholds: per position none or (type, one of its confidences).

    Thresholds range over every recorded confidence of the type at that
    position (plus +inf, "nobody leaves"), which covers every distinct
    behaviour of Algorithm 1 on the cache. Exponential: tiny caches only.
    """
    P, K, M = prob.conf.shape
    per_position = []
    for p in range(P):
        options = [(-1, math.nan)]
        for k in range(K):
            if allowed[p, k]:
                vals = sorted({float(prob.conf[p, k, m]) for m in range(M)})
                options += [(k, t) for t in vals]
        per_position.append(options)
    for combo in itertools.product(*per_position):
        yield np.array([c[0] for c in combo], np.int64), np.array([c[1] for c in combo], np.float64)


def exhaustive(prob, lam, allowed):
    """The global minimum of f over :func:`all_configurations`; returns its f."""
    return min(value(prob, lam, k, t) for k, t in all_configurations(prob, allowed))


def exhaustive_target(prob, allowed, min_correct=None, max_cost=None):
    """Best (n_correct, cost_sum) over all configurations that satisfy the target, None if none does."""
    key = _target_key(min_correct, max_cost)
    best = None
    for k, t in all_configurations(prob, allowed):
        nc, cs = counts(prob, k, t)
        if _satisfies(nc, cs, min_correct, max_cost) and (best is None or key(nc, cs) < key(*best)):
            best = (nc, cs)
    return best


def group_counts(prob, k_cfg, t_cfg):
    """Samples and correct predictions leaving at each position (head last), by Algorithm 1."""
    P, K, M = prob.conf.shape
    exits = np.zeros(P + 1, np.int64)
    correct = np.zeros(P + 1, np.int64)
    for m in range(M):
        out = P
        for p in range(P):
            k = int(k_cfg[p])
            if k >= 0 and float(prob.conf[p, k, m]) >= float(t_cfg[p]):
                out = p
                break
        ok = int(prob.final_correct[m]) if out == P else int(prob.pred[out, int(k_cfg[out]), m] == prob.truth[m])
        exits[out] += 1
        correct[out] += ok
    return exits, correct


def conservative_value(prob, lam, k_cfg, t_cfg, alpha):
    """f with every exit group's accuracy at its Beta lower bound (the released code's conservative objective)."""
    from dyce_search.conservative import conservative_correct

    a0, a_correct, a_cost_q = prob.coefficients(lam)
    exits, correct = group_counts(prob, k_cfg, t_cfg)
    _, cost_sum = counts(prob, k_cfg, t_cfg)
    return a0 + a_correct * conservative_correct(exits, correct, alpha) + a_cost_q * float(cost_sum)


def conservative_single_pass(prob, lam, allowed, alpha):
    """Algorithm 3 with scipy's bounded minimiser on the conservative f; returns (k, t)."""
    from scipy.optimize import minimize_scalar

    P, K, _ = prob.conf.shape
    k_cfg = np.full(P, -1, np.int64)
    t_cfg = np.full(P, np.nan)
    f_min = conservative_value(prob, lam, k_cfg, t_cfg, alpha)
    for p in range(P):
        if not reaching(prob, k_cfg, t_cfg, p):
            continue
        choice = None
        for k in range(K):
            if not allowed[p, k]:
                continue
            res = minimize_scalar(lambda t: conservative_value(prob, lam, *with_change(k_cfg, t_cfg, p, k, t), alpha),
                                  bounds=(0.0, 1.0), method="bounded")
            if res.fun < f_min:
                f_min, choice = res.fun, (k, float(res.x))
        if choice is not None:
            k_cfg, t_cfg = with_change(k_cfg, t_cfg, p, *choice)
    return k_cfg, t_cfg
