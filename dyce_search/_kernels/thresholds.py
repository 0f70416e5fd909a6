"""Kernels of Eq. 13: the objective of one configuration change at one position.

Everything here works on a configuration's *state* and on exact integers:

* correctness is counted (``n_correct``), never averaged;
* costs are quantised to int64 units (``seg_q``, ``exit_q``; see
  ``dyce_search.thresholds.Prepared``) so that ``cost_sum`` is an exact
  integer whatever the order in which samples are added up.

The objective of a configuration is then the affine function of the two
integers ``f = a0 + a_correct * n_correct + a_cost_q * cost_sum`` evaluated
in exactly this float64 operation order by :func:`objective_value` (and by the
plain-loop references in ``tests/naive_search.py``), so two configurations
with the same counts always get bit-identical values, independent of sample
order and thread count.

State of a configuration (``config_state``), per sample m:

``e[m]``   early position where m leaves (P = the head),
``e2[m]``  where m would leave if the exit at ``e[m]`` were removed,
``c1[m]``, ``c2[m]``  whether the prediction at ``e[m]`` / ``e2[m]`` is correct,

and ``cum[q]``, the cost of a sample that leaves at q (segments 0..q plus
every enabled exit at positions <= q).

The continuation of every sample at one position p (``pack_continuation``)
is one int16 ``code``: ``2 * d + correct`` where d is where the sample leaves
if it does not leave at p, or ``2 * (P + 1)`` if it never reaches p.

Presorted columns (``dyce_search._kernels.search.presort``) pack each entry
of column (p, k), sorted by decreasing confidence, into one int32 ``key``:
bits 0-28 the sample index, bit 29 whether exit (p, k) is correct on it, bit
30 whether it is the last entry of a run of equal confidences (a candidate
threshold boundary: ``conf >= t`` lets a whole run exit together).
"""

from __future__ import annotations

import numpy as np
from numba import njit

SAMPLE_BITS = 29
SAMPLE_MASK = (1 << SAMPLE_BITS) - 1
CORRECT_BIT = 1 << SAMPLE_BITS
LAST_BIT = 1 << (SAMPLE_BITS + 1)


@njit(cache=True, inline="always")
def objective_value(a0, a_correct, a_cost_q, n_correct, cost_sum):
    """f = a0 + a_correct * n_correct + a_cost_q * cost_sum (Eq. 12 as affine counts)."""
    return a0 + a_correct * np.float64(n_correct) + a_cost_q * np.float64(cost_sum)


@njit(cache=True)
def config_state(conf, pred, truth, final_correct, k_cfg, t_cfg, seg_q, exit_q):
    """Per-sample exit position and correctness of a configuration, with its totals.

    Parameters
    ----------
    conf : float32 [P, K, M]
    pred : int32 [P, K, M]
    truth : int32 [M]
        Reference class (labels, or the head's prediction when labels are unknown).
    final_correct : int8 [M]
        Whether the head is correct.
    k_cfg : int64 [P]
        Exit type per position, -1 for none.
    t_cfg : float64 [P]
        Threshold per position (ignored where k_cfg is -1).
    seg_q : int64 [P + 1]
        Quantised cost of each segment (the last one includes the head).
    exit_q : int64 [P, K]
        Quantised cost of each exit.

    Returns
    -------
    e, e2 : int16 [M]
    c1, c2 : int8 [M]
    cum : int64 [P + 1]
    n_correct : int64
    cost_sum : int64
    """
    P = k_cfg.shape[0]
    M = truth.shape[0]
    cum = np.empty(P + 1, np.int64)
    acc = np.int64(0)
    n_on = 0
    for q in range(P + 1):
        acc += seg_q[q]
        if q < P and k_cfg[q] >= 0:
            acc += exit_q[q, k_cfg[q]]
            n_on += 1
        cum[q] = acc
    on = np.empty(n_on, np.int64)
    j = 0
    for q in range(P):
        if k_cfg[q] >= 0:
            on[j] = q
            j += 1
    e = np.full(M, P, np.int16)
    e2 = np.full(M, P, np.int16)
    c1 = final_correct.copy()
    c2 = final_correct.copy()
    found = np.zeros(M, np.int8)
    # Position by position, so that every read of conf and pred is sequential.
    for j in range(n_on):
        q = on[j]
        k = k_cfg[q]
        t = t_cfg[q]
        col = conf[q, k]
        for m in range(M):
            # float32 -> float64 is exact, so >= compares the recorded value itself.
            if found[m] < 2 and np.float64(col[m]) >= t:
                ok = np.int8(1) if pred[q, k, m] == truth[m] else np.int8(0)
                if found[m] == 0:
                    e[m] = q
                    c1[m] = ok
                else:
                    e2[m] = q
                    c2[m] = ok
                found[m] += 1
    n_correct = np.int64(0)
    cost_sum = np.int64(0)
    for m in range(M):
        n_correct += c1[m]
        cost_sum += cum[e[m]]
    return e, e2, c1, c2, cum, n_correct, cost_sum


@njit(cache=True)
def pack_continuation(p, e, e2, c1, c2, cum, k_at_p, exit_q, code):
    """What every sample does if it does not leave at position p.

    Fills ``code[m]`` with ``2 * d + correct`` where d is the position where m
    leaves when position p lets nobody out (the rest of the configuration
    unchanged), or with ``not_reaching(P) = 2 * (P + 1)`` if m leaves before p.

    Returns
    -------
    n_reach : int64
        Samples reaching p.
    n_correct0, cost_sum0 : int64
        Totals of the configuration with position p disabled.
    """
    M = e.shape[0]
    sentinel = 2 * (cum.shape[0])
    x_old = exit_q[p, k_at_p] if k_at_p >= 0 else np.int64(0)
    n_reach = np.int64(0)
    n_correct0 = np.int64(0)
    cost_sum0 = np.int64(0)
    for m in range(M):
        em = e[m]
        if em < p:
            code[m] = sentinel
            n_correct0 += c1[m]
            cost_sum0 += cum[em]
        else:
            if em == p:
                d = e2[m]
                ok = c2[m]
            else:
                d = em
                ok = c1[m]
            code[m] = 2 * d + ok
            n_reach += 1
            n_correct0 += ok
            cost_sum0 += cum[d] - x_old
    return n_reach, n_correct0, cost_sum0


@njit(cache=True)
def saved_costs(cum, p):
    """int64 [P + 2]: ``cum[d] - cum[p]``, the cost saved by leaving at p instead of d (0 for d <= p and the sentinel)."""
    out = np.zeros(cum.shape[0] + 1, np.int64)
    for d in range(p + 1, cum.shape[0]):
        out[d] = cum[d] - cum[p]
    return out


@njit(cache=True)
def scan_thresholds(keys, n_valid, code, saved, n_reach, n_correct0, cost_base, a0, a_correct, a_cost_q):
    """Exact minimum of Eq. 13 over t for one exit (p, k): one pass over its presorted column.

    Walks the samples in decreasing confidence; each one that reaches p and
    leaves there instead of continuing changes ``n_correct`` by
    ``correct_here - correct_later`` and ``cost_sum`` by ``-saved[d]``. The
    candidate thresholds are the ends of runs of equal confidence holding at
    least one reaching sample. f is evaluated at every run end from the first
    candidate on: a run with no reaching sample repeats the value before it,
    which ``<`` never takes, so only candidates can win, the first (largest
    threshold) among equal minima. The walk itself has no data-dependent
    branch, since which samples reach p follows no pattern along the column.

    Parameters
    ----------
    keys : int32 [M]
        Column (p, k) presorted and packed (module docstring).
    n_valid : int
        Entries of ``keys`` with a finite confidence (NaNs are sorted last and never exit).
    code : int16 [M]
        From :func:`pack_continuation`.
    saved : int64 [P + 2]
        From :func:`saved_costs`.
    n_reach, n_correct0 : int64
    cost_base : int64
        ``cost_sum`` with position p enabled as (p, k) and nobody leaving there.
    a0, a_correct, a_cost_q : float64
        Objective coefficients (cost coefficient per quantised unit).

    Returns
    -------
    best_f : float64
        +inf when no sample reaches p.
    best_i : int64
        Index into ``keys`` of the last entry of the best run, -1 if none.
    """
    sentinel = 2 * (saved.shape[0] - 1)
    best_f = np.inf
    best_i = -1
    if n_reach == 0:
        return best_f, best_i
    # Runs before the first reaching sample hold "nobody leaves", not a candidate.
    start = 0
    while start < n_valid and code[keys[start] & SAMPLE_MASK] >= sentinel:
        start += 1
    d_correct = np.int64(0)
    d_cost = np.int64(0)
    for i in range(start, n_valid):
        key = keys[i]
        c = np.int64(code[key & SAMPLE_MASK])
        r = np.int64(c < sentinel)
        d_correct += r * (((key >> SAMPLE_BITS) & 1) - (c & 1))
        d_cost += saved[c >> 1]  # saved[P + 1] = 0 for samples not reaching p
        if key & LAST_BIT:
            f = objective_value(a0, a_correct, a_cost_q, n_correct0 + d_correct, cost_base - d_cost)
            if f < best_f:
                best_f = f
                best_i = i
    return best_f, best_i


@njit(cache=True)
def value_at_threshold(conf_col, pred_col, truth, t, code, saved, n_correct0, cost_base):
    """Counts of the configuration with threshold t at the changed position (for the bounded method).

    Parameters
    ----------
    conf_col : float32 [M]
    pred_col : int32 [M]
        Column (p, k) in sample order.
    truth : int32 [M]
    t : float64
    code, saved, n_correct0, cost_base
        As in :func:`scan_thresholds`.

    Returns
    -------
    n_correct, cost_sum : int64
    """
    sentinel = 2 * (saved.shape[0] - 1)
    d_correct = np.int64(0)
    d_cost = np.int64(0)
    for m in range(code.shape[0]):
        c = code[m]
        if c < sentinel and np.float64(conf_col[m]) >= t:
            ok = 1 if pred_col[m] == truth[m] else 0
            d_correct += ok - (c & 1)
            d_cost += saved[c >> 1]
    return n_correct0 + d_correct, cost_base - d_cost
