"""Brute-force references for threshold minimisation and the searches (plain Python loops).

Objective values are computed from scratch for every configuration tried:
per-sample exits by Algorithm 1, ``n_correct`` and the quantised
``cost_sum`` as Python integers, then f with the same float64 expression as
the kernels (``a0 + a_correct * n_correct + a_cost_q * cost_sum``), so the
references and the kernels agree bit for bit. ``tests/naive.py``'s Eq. 12
(``f_paper``) cross-checks these values to rounding.

``prep`` is a :class:`dyce_search.thresholds.Prepared` (quantised costs and
objective coefficients); only its plain arrays are used here.
"""

from __future__ import annotations

import math

import numpy as np


def counts(prep, k_cfg, t_cfg):
    """(n_correct, cost_sum) of a configuration, by Algorithm 1 sample by sample."""
    P, K, M = prep.conf.shape
    n_correct = 0
    cost_sum = 0
    for m in range(M):
        cost = 0
        out = P
        for p in range(P):
            cost += int(prep.seg_q[p])
            k = int(k_cfg[p])
            if k < 0:
                continue
            cost += int(prep.exit_q[p, k])
            if float(prep.conf[p, k, m]) >= float(t_cfg[p]):
                out = p
                break
        if out == P:
            cost += int(prep.seg_q[P])
            ok = int(prep.final_correct[m])
        else:
            ok = int(prep.pred[out, int(k_cfg[out]), m] == prep.truth[m])
        n_correct += ok
        cost_sum += cost
    return n_correct, cost_sum


def value(prep, lam, k_cfg, t_cfg):
    """f of a configuration (Eq. 12 on prep's objective scale)."""
    a0, a_correct, a_cost_q = prep.coefficients(lam)
    n_correct, cost_sum = counts(prep, k_cfg, t_cfg)
    return a0 + a_correct * float(n_correct) + a_cost_q * float(cost_sum)


def reaching(prep, k_cfg, t_cfg, p):
    """Samples that reach early position p (leave at no enabled position before it)."""
    P, K, M = prep.conf.shape
    out = []
    for m in range(M):
        if all(
            int(k_cfg[q]) < 0 or not float(prep.conf[q, int(k_cfg[q]), m]) >= float(t_cfg[q]) for q in range(p)
        ):
            out.append(m)
    return out


def candidate_thresholds(prep, k_cfg, t_cfg, p, k):
    """Distinct confidences (float64) of exit (p, k) on the samples reaching p, decreasing."""
    vals = {float(prep.conf[p, k, m]) for m in reaching(prep, k_cfg, t_cfg, p)}
    return sorted((v for v in vals if not math.isnan(v)), reverse=True)


def with_change(k_cfg, t_cfg, p, k, t):
    k2 = np.array(k_cfg, np.int64).copy()
    t2 = np.array(t_cfg, np.float64).copy()
    k2[p] = k
    t2[p] = t if k >= 0 else np.nan
    return k2, t2


def minimize_exact(prep, lam, k_cfg, t_cfg, p, k):
    """(t, f): every candidate threshold tried; the largest one among equal minima."""
    best_t, best_f = math.nan, math.inf
    for t in candidate_thresholds(prep, k_cfg, t_cfg, p, k):
        f = value(prep, lam, *with_change(k_cfg, t_cfg, p, k, t))
        if f < best_f:
            best_t, best_f = t, f
    return best_t, best_f


def single_pass(prep, lam, allowed):
    """Algorithm 3 with exact threshold minimisation; returns (k, t, f)."""
    P, K, _ = prep.conf.shape
    k_cfg = np.full(P, -1, np.int64)
    t_cfg = np.full(P, np.nan)
    f_min = value(prep, lam, k_cfg, t_cfg)
    for p in range(P):
        choice = None
        for k in range(K):
            if not allowed[p, k]:
                continue
            t, f = minimize_exact(prep, lam, k_cfg, t_cfg, p, k)
            if f < f_min:
                f_min, choice = f, (k, t)
        if choice is not None:
            k_cfg, t_cfg = with_change(k_cfg, t_cfg, p, *choice)
    return k_cfg, t_cfg, f_min


def best_change(prep, lam, k_cfg, t_cfg, allowed):
    """Algorithm 2's inner loops: the first (p, k_c, t) in visiting order with the lowest f, and f."""
    P, K, _ = prep.conf.shape
    f_min = value(prep, lam, k_cfg, t_cfg)
    choice = None
    for p in range(P):
        if k_cfg[p] >= 0:
            f = value(prep, lam, *with_change(k_cfg, t_cfg, p, -1, math.nan))
            if f < f_min:
                f_min, choice = f, (p, -1, math.nan)
        for k in range(K):
            if not allowed[p, k]:
                continue
            t, f = minimize_exact(prep, lam, k_cfg, t_cfg, p, k)
            if f < f_min:
                f_min, choice = f, (p, k, t)
    return choice, f_min


def iterative(prep, lam, allowed, max_rounds=None):
    """Algorithm 2 with exact threshold minimisation; returns (k, t, f, rounds)."""
    P = prep.conf.shape[0]
    k_cfg = np.full(P, -1, np.int64)
    t_cfg = np.full(P, np.nan)
    rounds = 0
    while max_rounds is None or rounds < max_rounds:
        choice, _ = best_change(prep, lam, k_cfg, t_cfg, allowed)
        if choice is None:
            break
        k_cfg, t_cfg = with_change(k_cfg, t_cfg, *choice)
        rounds += 1
    return k_cfg, t_cfg, value(prep, lam, k_cfg, t_cfg), rounds


def baseline(prep, lam, allowed, k):
    """Type k at every allowed position, one shared threshold over all its distinct confidences there.

    Returns (t, f) of the best (largest t on ties), (nan, inf) if there is no candidate.
    """
    P = prep.conf.shape[0]
    on = [p for p in range(P) if allowed[p, k]]
    vals = sorted({float(prep.conf[p, k, m]) for p in on for m in range(prep.conf.shape[2])}, reverse=True)
    best_t, best_f = math.nan, math.inf
    for t in vals:
        k_cfg = np.full(P, -1, np.int64)
        t_cfg = np.full(P, np.nan)
        k_cfg[on] = k
        t_cfg[on] = t
        f = value(prep, lam, k_cfg, t_cfg)
        if f < best_f:
            best_t, best_f = t, f
    return best_t, best_f
