"""Kernels of the paper's configuration searches (Algorithms 2 and 3, the shared-threshold baseline).

Every search works per lambda on exact integer counts (see
``dyce_search._kernels.thresholds``); lambdas are independent, so the
parallel loops run one lambda per iteration and write only that lambda's
output row. Results therefore never depend on the number of threads.
Each search minimises thresholds exactly (``bounded=False``: global minimum,
threshold placed inside the chosen gap) or with the paper's bounded scalar
minimiser (``bounded=True``, scipy's iterates reproduced exactly).

Exit rule: the float64 form of :mod:`dyce_search.exit_rule`, ``np.float64(conf)
>= t`` (no preparation); the baseline's candidate thresholds are recorded
confidences promoted exactly to float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .state import apply_change, config_state, pack_continuation, saved_costs
from .thresholds import (
    CORRECT_BIT,
    LAST_BIT,
    between,
    bounded_minimum,
    fminbound,
    objective_value,
    place_threshold,
    scan_thresholds,
)

#: Slack (a lower bound on a candidate's change of f) above which a candidate
#: cannot beat the best change of a round; absorbs the rounding of the bounds.
SLACK_TOLERANCE = 1e-9

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
                     bounded, k_out, t_out):
    """Algorithm 3 for one lambda; writes k_out / t_out [P] and returns f."""
    P, K, M = conf.shape
    sentinel = 2 * (P + 1)
    e = np.full(M, P, np.int16)
    c1 = final_correct.copy()
    code = np.empty(M, np.int16)
    d_correct = np.empty(M + 1, np.int64)
    d_cost = np.empty(M + 1, np.int64)
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
        best_t = np.nan
        for k in range(K):
            if not allowed[p, k]:
                continue
            cost_base = cost_sum0 + n_reach * exit_q[p, k]
            if bounded:
                t, f, _ = bounded_minimum(keys[p, k], n_valid[p, k], code, saved, conf[p, k], n_reach, n_correct0,
                                          cost_base, a0, a_correct, a_cost_q, d_correct, d_cost)
                i = -1
            else:
                f, i = scan_thresholds(keys[p, k], n_valid[p, k], code, saved, n_reach, n_correct0, cost_base, a0,
                                       a_correct, a_cost_q)
                t = np.nan
            if f < best_f:  # Algorithm 3: strictly lower, the smallest k on ties
                best_f = f
                best_k = k
                best_i = i
                best_t = t
        if best_k < 0:
            continue
        f_min = best_f
        if not bounded:
            best_t = place_threshold(keys[p, best_k], n_valid[p, best_k], code, best_i, conf[p, best_k], sentinel)
        k_out[p] = best_k
        t_out[p] = best_t
        for m in range(M):
            if e[m] == P and np.float64(conf[p, best_k, m]) >= best_t:
                e[m] = p
                c1[m] = 1 if pred[p, best_k, m] == truth[m] else 0
        for q in range(p, P + 1):
            cum[q] += exit_q[p, best_k]
    return f_min


@njit(parallel=True, cache=True)
def single_pass(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, coefs, bounded):
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
        Quantised costs (:class:`dyce_search.problem.Problem`).
    allowed : bool [P, K]
        Exits the search may enable (available and allowed by the caller).
    coefs : float64 [L, 3]
        ``(a0, a_correct, a_cost_q)`` per lambda.
    bounded : bool
        The paper's bounded minimiser instead of the exact one.

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
                                    coefs[j, 0], coefs[j, 1], coefs[j, 2], bounded, k_out[j], t_out[j])
    return k_out, t_out, f_out


@njit(cache=True)
def _iterative_one(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, a0, a_correct,
                   a_cost_q, max_rounds, bounded, k_cfg, t_cfg):
    """Algorithm 2 for one lambda; writes k_cfg / t_cfg [P] and returns (f, rounds, scans).

    Incremental rounds: every candidate (p, k_c) keeps a lower bound on how
    much it could change f (``slack``), exact after it was scanned and
    lowered by :func:`~dyce_search._kernels.state.apply_change` after every
    applied change. A round scans candidates in increasing order of their
    bound and stops once the bound exceeds the best change found, so a
    candidate is skipped only if it cannot equal or beat the round's winner;
    the winner is then picked in Algorithm 2's visiting order (position, then
    none, then type index). The result is the one a full rescan per round gives.
    """
    P, K, M = conf.shape
    k_cfg[:] = -1
    t_cfg[:] = np.nan
    codes = np.empty((P, M), np.int16)
    have_code = np.zeros(P, np.bool_)
    n_reach = np.zeros(P, np.int64)
    n_correct0 = np.zeros(P, np.int64)
    cost_sum0 = np.zeros(P, np.int64)
    d_correct = np.empty(M + 1, np.int64)
    d_cost = np.empty(M + 1, np.int64)
    e, e2, c1, c2, cum, n_correct, cost_sum = config_state(conf, pred, truth, final_correct, k_cfg, t_cfg,
                                                           seg_q, exit_q)
    f_cur = objective_value(a0, a_correct, a_cost_q, n_correct, cost_sum)
    n_options = K + 1  # column K: disable the position
    slack = np.full((P, n_options), -np.inf)
    value = np.empty((P, n_options))
    chosen_t = np.empty((P, n_options))
    chosen_i = np.empty((P, n_options), np.int64)
    bound = np.empty(P * n_options)
    rounds = 0
    scans = 0
    while max_rounds < 0 or rounds < max_rounds:
        have_code[:] = False
        value[:] = np.inf
        for p in range(P):
            usable = np.any(allowed[p])
            for k in range(n_options):
                ok = usable and (k_cfg[p] >= 0 if k == K else allowed[p, k])
                bound[p * n_options + k] = slack[p, k] if ok else np.inf
        order = np.argsort(bound, kind="mergesort")
        best_change = 0.0
        for idx in order:
            lower = bound[idx]
            if lower == np.inf or lower > best_change + SLACK_TOLERANCE:
                break
            p = idx // n_options
            k = idx % n_options
            if not have_code[p]:
                n_reach[p], n_correct0[p], cost_sum0[p] = pack_continuation(p, e, e2, c1, c2, cum, k_cfg[p], exit_q,
                                                                              codes[p])
                have_code[p] = True
            if k == K:
                f = objective_value(a0, a_correct, a_cost_q, n_correct0[p], cost_sum0[p])
                slack[p, K] = f - f_cur
            else:
                if n_reach[p] == 0:
                    slack[p, k] = 2.0 * SLACK_TOLERANCE  # no candidate until samples reach p
                    continue
                scans += 1
                saved = saved_costs(cum, p)
                cost_base = cost_sum0[p] + n_reach[p] * exit_q[p, k]
                if bounded:
                    t, f, exact_f = bounded_minimum(keys[p, k], n_valid[p, k], codes[p], saved, conf[p, k],
                                                    n_reach[p], n_correct0[p], cost_base, a0, a_correct, a_cost_q,
                                                    d_correct, d_cost)
                    chosen_t[p, k] = t
                    slack[p, k] = exact_f - f_cur
                else:
                    f, i = scan_thresholds(keys[p, k], n_valid[p, k], codes[p], saved, n_reach[p], n_correct0[p],
                                           cost_base, a0, a_correct, a_cost_q)
                    chosen_i[p, k] = i
                    slack[p, k] = f - f_cur
            value[p, k] = f
            if f - f_cur < best_change:
                best_change = f - f_cur
        # Algorithm 2's visiting order; "<" keeps the first of equal values.
        best_f = f_cur
        best_p = -1
        best_k = -1
        for p in range(P):
            if value[p, K] < best_f:
                best_f = value[p, K]
                best_p = p
                best_k = -1
            for k in range(K):
                if value[p, k] < best_f:
                    best_f = value[p, k]
                    best_p = p
                    best_k = k
        if best_p < 0:
            break
        k_before = k_cfg[best_p]
        if bounded and best_k >= 0:
            n_correct, cost_sum = apply_change(conf, pred, truth, final_correct, exit_q, k_cfg, t_cfg, best_p, best_k,
                                               chosen_t[best_p, best_k], e, e2, c1, c2, cum, a_correct, a_cost_q,
                                               slack)
        else:
            n_correct, cost_sum = set_position(keys, n_valid, conf, pred, truth, final_correct, exit_q, codes[best_p],
                                               k_cfg, t_cfg, best_p, best_k, chosen_i[best_p, max(best_k, 0)], e, e2,
                                               c1, c2, cum, a_correct, a_cost_q, slack)
        f_new = objective_value(a0, a_correct, a_cost_q, n_correct, cost_sum)
        shift_own_row(slack, best_p, k_before, best_k, f_cur, f_new)
        f_cur = f_new
        rounds += 1
    return f_cur, rounds, scans


@njit(cache=True)
def set_position(keys, n_valid, conf, pred, truth, final_correct, exit_q, code, k_cfg, t_cfg, p, k, i,
                 e, e2, c1, c2, cum, a_correct, a_cost_q, slack):
    """Set position p to the winner of an exact scan: exit type k (-1: none) with run ``i``'s threshold.

    The threshold goes inside the winning gap (:func:`place_threshold`,
    ``code`` the continuation codes the scan used); returns the new
    (n_correct, cost_sum) of :func:`~dyce_search._kernels.state.apply_change`.
    """
    P = k_cfg.shape[0]
    t = np.nan if k < 0 else place_threshold(keys[p, k], n_valid[p, k], code, i, conf[p, k], 2 * (P + 1))
    return apply_change(conf, pred, truth, final_correct, exit_q, k_cfg, t_cfg, p, k, t, e, e2, c1, c2, cum,
                        a_correct, a_cost_q, slack)


@njit(cache=True)
def shift_own_row(slack, p, k_before, k_after, f_before, f_after):
    """Slack of the options at p after p itself changed from ``k_before`` to ``k_after``.

    Their absolute values do not depend on p's own setting, so each moves by
    the change of f; disabling p is worth exactly ``f_before`` when p was
    disabled before, and is no option once p is disabled.
    """
    K = slack.shape[1] - 1
    for k in range(K):
        slack[p, k] += f_before - f_after
    if k_before < 0:
        slack[p, K] = f_before - f_after
    elif k_after < 0:
        slack[p, K] = 0.0
    else:
        slack[p, K] += f_before - f_after


@njit(parallel=True, cache=True)
def iterative(keys, n_valid, conf, pred, truth, final_correct, seg_q, exit_q, allowed, coefs, max_rounds, bounded):
    """Algorithm 2 (iterative search) for every lambda.

    Parameters are those of :func:`single_pass`, plus ``max_rounds`` (int,
    < 0 for no limit).

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
                                 coefs[j, 0], coefs[j, 1], coefs[j, 2], max_rounds, bounded, k_out[j], t_out[j])
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
        Candidate thresholds (recorded confidences), decreasing.
    lower : float64 [B]
        The next lower recorded confidence of type k at the enabled positions
        (0 if none): every t in (lower, threshold] gives the same counts.
    n_correct, cost_sum : int64 [B + 1]
        Counts of the configuration with nobody leaving (entry 0) and at each candidate.
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
    pos = np.empty(n_on, np.int64)
    j = 0
    for q in range(P):
        if on[q]:
            values[j * M:(j + 1) * M] = conf[q, k]
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
    lower = np.empty(nv, np.float64)
    nc_out = np.empty(nv + 1, np.int64)
    cs_out = np.empty(nv + 1, np.int64)
    nc_out[0] = n_correct
    cs_out[0] = cost_sum
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
            lower[b] = np.float64(values[order[i + 1]]) if i < nv - 1 else 0.0
            nc_out[b + 1] = n_correct
            cs_out[b + 1] = cost_sum
            b += 1
            pending = False
    return thresholds[:b].copy(), lower[:b].copy(), nc_out[:b + 1].copy(), cs_out[:b + 1].copy()


@njit(parallel=True, cache=True)
def pick_minimum(n_correct, cost_sum, coefs):
    """Per lambda, the first candidate minimising f (the largest threshold on ties).

    Parameters
    ----------
    n_correct, cost_sum : int64 [B + 1]
        From :func:`baseline_sweep` (entry 0: nobody leaves, never picked).
    coefs : float64 [L, 3]

    Returns
    -------
    best : int64 [L]
        Candidate index into the sweep's thresholds, -1 when B == 0.
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
        for b in range(1, n_correct.shape[0]):
            f = objective_value(a0, ac, aq, n_correct[b], cost_sum[b])
            if f < bf:
                bf = f
                bi = b - 1
        best[j] = bi
        best_f[j] = bf
    return best, best_f


@njit(parallel=True, cache=True)
def pick_bounded(thresholds, n_correct, cost_sum, coefs):
    """Per lambda, the paper's bounded minimiser over the shared threshold t in [0, 1].

    Parameters are those of :func:`pick_minimum` plus the sweep's decreasing
    ``thresholds``; f(t) is the count of the last candidate >= t.

    Returns
    -------
    t, f : float64 [L]
    """
    L = coefs.shape[0]
    t_out = np.empty(L)
    f_out = np.empty(L)
    no_keys = np.empty(0, np.int32)
    no_conf = np.empty(0, np.float32)
    for j in prange(L):
        t_out[j], f_out[j] = fminbound(no_keys, 0, no_conf, n_correct, cost_sum, 0, 0, coefs[j, 0], coefs[j, 1],
                                       coefs[j, 2], thresholds)
    return t_out, f_out


@njit(cache=True)
def shared_threshold(threshold, lower):
    """The shared threshold of a baseline candidate, strictly inside its gap (see :func:`baseline_sweep`)."""
    return between(threshold, lower)
