"""Kernels of the configuration searches (Algorithms 2 and 3 and the shared-threshold baseline).

Every search works per lambda on exact integer counts (see
``dyce_search._kernels.thresholds``); lambdas are independent, so the
parallel loops run one lambda per iteration and write only that lambda's
output row. Results therefore never depend on the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .thresholds import (
    CORRECT_BIT,
    LAST_BIT,
    SAMPLE_MASK,
    config_state,
    objective_value,
    pack_continuation,
    saved_costs,
    scan_thresholds,
)

_DIGIT_BITS = 11
_N_BUCKETS = 1 << _DIGIT_BITS
_DIGIT_MASK = _N_BUCKETS - 1


@njit(cache=True)
def _descending_keys(values):
    """uint32 keys whose ascending order is the descending order of the float32 values, NaN last."""
    bits = values.view(np.uint32)
    out = np.empty(values.shape[0], np.uint32)
    for i in range(values.shape[0]):
        if np.isnan(values[i]):
            out[i] = np.uint32(0xFFFFFFFF)
            continue
        b = bits[i]
        # Standard order-preserving map of IEEE floats to unsigned ints, then inverted.
        if b & np.uint32(0x80000000):
            asc = ~b
        else:
            asc = b | np.uint32(0x80000000)
        out[i] = ~asc
    return out


@njit(cache=True)
def argsort_descending(values):
    """Indices sorting float32 ``values`` by decreasing value, NaNs last (LSD radix sort, 3 passes).

    Returns
    -------
    order : int64 [n]
    n_valid : int64
        Number of non-NaN values (they come first in ``order``).
    """
    n = values.shape[0]
    keys = _descending_keys(values)
    order = np.arange(n).astype(np.int64)
    tmp_order = np.empty(n, np.int64)
    tmp_keys = np.empty(n, np.uint32)
    count = np.empty(_N_BUCKETS + 1, np.int64)
    for shift in (0, _DIGIT_BITS, 2 * _DIGIT_BITS):
        count[:] = 0
        for i in range(n):
            count[((keys[i] >> shift) & _DIGIT_MASK) + 1] += 1
        for b in range(_N_BUCKETS):
            count[b + 1] += count[b]
        for i in range(n):
            d = (keys[i] >> shift) & _DIGIT_MASK
            j = count[d]
            count[d] = j + 1
            tmp_order[j] = order[i]
            tmp_keys[j] = keys[i]
        order, tmp_order = tmp_order, order
        keys, tmp_keys = tmp_keys, keys
    n_valid = n
    while n_valid > 0 and np.isnan(values[order[n_valid - 1]]):
        n_valid -= 1
    return order, n_valid


@njit(cache=True)
def column_keys(conf_col, pred_col, truth, keys_out):
    """Presort one exit's column: fill ``keys_out`` (int32 [M]) and return the number of finite confidences.

    Keys are packed as documented in ``dyce_search._kernels.thresholds``.
    """
    order, nv = argsort_descending(conf_col)
    for i in range(nv):
        m = order[i]
        key = np.int32(m)
        if pred_col[m] == truth[m]:
            key |= CORRECT_BIT
        if i == nv - 1 or conf_col[order[i + 1]] != conf_col[m]:
            key |= LAST_BIT
        keys_out[i] = key
    for i in range(nv, conf_col.shape[0]):
        keys_out[i] = np.int32(order[i])
    return nv


@njit(parallel=True, cache=True)
def presort(conf, pred, truth, available):
    """Every exit's samples by decreasing confidence, packed into int32 keys (lambda independent).

    Parameters
    ----------
    conf : float32 [P, K, M]
    pred : int32 [P, K, M]
    truth : int32 [M]
    available : bool [P, K]

    Returns
    -------
    keys : int32 [P, K, M]
        Packed as documented in ``dyce_search._kernels.thresholds``; zeros for absent exits.
    n_valid : int64 [P, K]
        Finite confidences per column (0 for absent exits).
    """
    P, K, M = conf.shape
    keys = np.zeros((P, K, M), np.int32)
    n_valid = np.zeros((P, K), np.int64)
    for c in prange(P * K):
        p = c // K
        k = c % K
        if available[p, k]:
            n_valid[p, k] = column_keys(conf[p, k], pred[p, k], truth, keys[p, k])
    return keys, n_valid


@njit(cache=True)
def _single_pass_one(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, a0, a_correct, a_cost_q,
                     k_out, t_out):
    """Algorithm 3 for one lambda; writes k_out / t_out [P] and returns f."""
    P, K, M = conf.shape
    e = np.full(M, P, np.int16)
    c1 = final_correct.copy()
    code = np.empty(M, np.int16)
    cum = np.cumsum(seg_q)
    n_correct = np.int64(0)
    for m in range(M):
        n_correct += c1[m]
    f_min = objective_value(a0, a_correct, a_cost_q, n_correct, M * cum[P])
    for p in range(P):
        k_out[p] = -1
        t_out[p] = np.nan
        if not np.any(allowed[p]):
            continue
        # Positions > p are still disabled, so a sample that stays goes to the head.
        n_reach, n_correct0, cost_sum0 = pack_continuation(p, e, e, c1, c1, cum, -1, exit_q, code)
        if n_reach == 0:
            continue
        saved = saved_costs(cum, p)
        best_f = f_min
        best_k = -1
        best_i = -1
        for k in range(K):
            if not allowed[p, k]:
                continue
            f, i = scan_thresholds(keys[p, k], n_valid[p, k], code, saved, n_reach, n_correct0,
                                   cost_sum0 + n_reach * exit_q[p, k], a0, a_correct, a_cost_q)
            if f < best_f:  # Algorithm 3: strictly lower, the smallest k on ties
                best_f = f
                best_k = k
                best_i = i
        if best_k < 0:
            continue
        f_min = best_f
        t = np.float64(conf[p, best_k, keys[p, best_k, best_i] & SAMPLE_MASK])
        k_out[p] = best_k
        t_out[p] = t
        for m in range(M):
            if e[m] == P and np.float64(conf[p, best_k, m]) >= t:
                e[m] = p
                c1[m] = 1 if pred[p, best_k, m] == truth[m] else 0
        for q in range(p, P + 1):
            cum[q] += exit_q[p, best_k]
    return f_min


@njit(parallel=True, cache=True)
def single_pass(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, coefs):
    """Algorithm 3 (single-pass search) for every lambda.

    Parameters
    ----------
    keys, n_valid
        From :func:`presort`.
    conf : float32 [P, K, M]
    pred : int32 [P, K, M]
    truth : int32 [M]
        Reference class (labels, or the head's prediction when labels are unknown).
    final_correct : int8 [M]
    seg_q : int64 [P + 1]
    exit_q : int64 [P, K]
        Quantised costs (``dyce_search.thresholds.Prepared``).
    allowed : bool [P, K]
        Exits the search may enable (available and allowed by the caller).
    coefs : float64 [L, 3]
        ``(a0, a_correct, a_cost_q)`` per lambda.

    Returns
    -------
    k_out : int64 [L, P]
    t_out : float64 [L, P]
    f_out : float64 [L]
    """
    P = conf.shape[0]
    L = coefs.shape[0]
    k_out = np.empty((L, P), np.int64)
    t_out = np.empty((L, P), np.float64)
    f_out = np.empty(L, np.float64)
    for j in prange(L):
        f_out[j] = _single_pass_one(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed,
                                    coefs[j, 0], coefs[j, 1], coefs[j, 2], k_out[j], t_out[j])
    return k_out, t_out, f_out


@njit(cache=True)
def _iterative_one(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, a0, a_correct,
                   a_cost_q, max_rounds, k_cfg, t_cfg):
    """Algorithm 2 for one lambda; writes k_cfg / t_cfg [P] and returns (f, rounds, scans)."""
    P, K, M = conf.shape
    k_cfg[:] = -1
    t_cfg[:] = np.nan
    code = np.empty(M, np.int16)
    e, e2, c1, c2, cum, n_correct, cost_sum = config_state(conf, pred, truth, final_correct, k_cfg, t_cfg,
                                                           seg_q, exit_q)
    f_cur = objective_value(a0, a_correct, a_cost_q, n_correct, cost_sum)
    rounds = 0
    scans = 0
    while max_rounds < 0 or rounds < max_rounds:
        # Every change (p, k_c) in Algorithm 2's order, k_c = none first; "<"
        # keeps the first of equal values, so ties go to the earliest position
        # and then the smallest type index.
        best_f = f_cur
        best_p = -1
        best_k = -1
        best_t = np.nan
        for p in range(P):
            if not np.any(allowed[p]):
                continue
            n_reach, n_correct0, cost_sum0 = pack_continuation(p, e, e2, c1, c2, cum, k_cfg[p], exit_q, code)
            if k_cfg[p] >= 0:
                f = objective_value(a0, a_correct, a_cost_q, n_correct0, cost_sum0)
                if f < best_f:
                    best_f = f
                    best_p = p
                    best_k = -1
                    best_t = np.nan
            if n_reach == 0:
                continue
            saved = saved_costs(cum, p)
            for k in range(K):
                if not allowed[p, k]:
                    continue
                scans += 1
                f, i = scan_thresholds(keys[p, k], n_valid[p, k], code, saved, n_reach, n_correct0,
                                       cost_sum0 + n_reach * exit_q[p, k], a0, a_correct, a_cost_q)
                if f < best_f:
                    best_f = f
                    best_p = p
                    best_k = k
                    best_t = np.float64(conf[p, k, keys[p, k, i] & SAMPLE_MASK])
        if best_p < 0:
            break
        k_cfg[best_p] = best_k
        t_cfg[best_p] = best_t
        e, e2, c1, c2, cum, n_correct, cost_sum = config_state(conf, pred, truth, final_correct, k_cfg, t_cfg,
                                                               seg_q, exit_q)
        f_cur = objective_value(a0, a_correct, a_cost_q, n_correct, cost_sum)
        rounds += 1
    return f_cur, rounds, scans


@njit(parallel=True, cache=True)
def iterative(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, coefs, max_rounds):
    """Algorithm 2 (iterative search) for every lambda.

    Parameters are those of :func:`single_pass`, plus ``max_rounds`` (int, < 0 for no limit).

    Returns
    -------
    k_out : int64 [L, P]
    t_out : float64 [L, P]
    f_out : float64 [L]
    rounds : int64 [L]
        Changes applied per lambda.
    scans : int64 [L]
        Threshold scans run per lambda.
    """
    P = conf.shape[0]
    L = coefs.shape[0]
    k_out = np.empty((L, P), np.int64)
    t_out = np.empty((L, P), np.float64)
    f_out = np.empty(L, np.float64)
    rounds = np.empty(L, np.int64)
    scans = np.empty(L, np.int64)
    for j in prange(L):
        f, r, n = _iterative_one(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed,
                                 coefs[j, 0], coefs[j, 1], coefs[j, 2], max_rounds, k_out[j], t_out[j])
        f_out[j] = f
        rounds[j] = r
        scans[j] = n
    return k_out, t_out, f_out, rounds, scans


@njit(cache=True)
def baseline_sweep(conf, pred, truth, final_correct, seg_q, exit_q, k, on):
    """Counts of every shared threshold for exit type k enabled at the positions ``on`` (lambda independent).

    Sweeps t downwards over every distinct confidence of type k at the enabled
    positions; a sample leaves at the first enabled position whose confidence
    is >= t, so lowering t past conf[p, k, m] moves m to p if p is earlier
    than where it left so far.

    Parameters
    ----------
    k : int
    on : bool [P]
        Positions where type k is enabled (each must have it available).

    Returns
    -------
    thresholds : float64 [B]
        Candidate thresholds, decreasing.
    n_correct, cost_sum : int64 [B]
        Counts of the configuration at each candidate.
    """
    P, K, M = conf.shape
    cum = np.empty(P + 1, np.int64)
    acc = np.int64(0)
    n_on = 0
    for q in range(P + 1):
        acc += seg_q[q]
        if q < P and on[q]:
            acc += exit_q[q, k]
            n_on += 1
        cum[q] = acc
    values = np.empty(n_on * M, np.float32)
    j = 0
    for q in range(P):
        if on[q]:
            values[j * M:(j + 1) * M] = conf[q, k]
            j += 1
    pos = np.empty(n_on, np.int64)
    j = 0
    for q in range(P):
        if on[q]:
            pos[j] = q
            j += 1
    order, nv = argsort_descending(values)
    e = np.full(M, P, np.int64)
    c = final_correct.copy()
    n_correct = np.int64(0)
    for m in range(M):
        n_correct += c[m]
    cost_sum = M * cum[P]
    thresholds = np.empty(nv, np.float64)
    nc_out = np.empty(nv, np.int64)
    cs_out = np.empty(nv, np.int64)
    b = 0
    pending = False
    for i in range(nv):
        idx = order[i]
        q = pos[idx // M]
        m = idx % M
        if q < e[m]:
            ok = 1 if pred[q, k, m] == truth[m] else 0
            n_correct += ok - c[m]
            cost_sum += cum[q] - cum[e[m]]
            e[m] = q
            c[m] = ok
            pending = True
        if pending and (i == nv - 1 or values[order[i + 1]] != values[idx]):
            thresholds[b] = np.float64(values[idx])
            nc_out[b] = n_correct
            cs_out[b] = cost_sum
            b += 1
            pending = False
    return thresholds[:b].copy(), nc_out[:b].copy(), cs_out[:b].copy()


@njit(parallel=True, cache=True)
def pick_minimum(n_correct, cost_sum, coefs):
    """Per lambda, the first index minimising f over candidate counts (the largest threshold on ties).

    Parameters
    ----------
    n_correct, cost_sum : int64 [B]
    coefs : float64 [L, 3]

    Returns
    -------
    best : int64 [L]
        -1 when B == 0.
    best_f : float64 [L]
        +inf when B == 0.
    """
    L = coefs.shape[0]
    best = np.full(L, -1, np.int64)
    best_f = np.full(L, np.inf)
    for j in prange(L):
        a0 = coefs[j, 0]
        ac = coefs[j, 1]
        aq = coefs[j, 2]
        bf = np.inf
        bi = -1
        for b in range(n_correct.shape[0]):
            f = objective_value(a0, ac, aq, n_correct[b], cost_sum[b])
            if f < bf:
                bf = f
                bi = b
        best[j] = bi
        best_f[j] = bf
    return best, best_f


@njit(cache=True)
def shared_threshold_counts(conf, pred, truth, final_correct, seg_q, exit_q, k, on, t):
    """Counts of the baseline configuration (type k at positions ``on``, threshold t everywhere)."""
    P = conf.shape[0]
    k_cfg = np.full(P, -1, np.int64)
    t_cfg = np.full(P, np.nan)
    for q in range(P):
        if on[q]:
            k_cfg[q] = k
            t_cfg[q] = t
    _, _, _, _, _, n_correct, cost_sum = config_state(conf, pred, truth, final_correct, k_cfg, t_cfg, seg_q, exit_q)
    return n_correct, cost_sum
