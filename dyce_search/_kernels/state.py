"""Kernels of a configuration's per-sample state and of changing one position.

Everything here works on exact integers: correctness is counted
(``n_correct``), costs are quantised to int64 units (``seg_q``, ``exit_q``;
see :class:`dyce_search.problem.Problem`), so every total is exact whatever
the summation order.

State of a configuration (``config_state``), per sample m:

``e[m]``   early position where m leaves (P = the head),
``e2[m]``  where m would leave if the exit at ``e[m]`` were removed,
``c1[m]``, ``c2[m]``  whether the prediction at ``e[m]`` / ``e2[m]`` is correct,

and ``cum[q]``, the cost of a sample that leaves at q (segments 0..q plus
every enabled exit at positions <= q).

The continuation of every sample at one position p (``pack_continuation``)
is one int16 ``code``: ``2 * d + correct`` where d is where the sample leaves
if it does not leave at p, or ``2 * (P + 1)`` if it never reaches p.

``apply_change`` sets one position to another exit type and threshold and
updates the state in place in O(M) (plus a position-major pass for the
samples whose next exit moves). It also lowers the *slack* of every other
candidate (p, k): a lower bound on how much the best threshold for exit k at
p would change f relative to the current configuration (``slack >= 0``:
that change cannot lower f). The bound is what lets the descent and the
iterative search skip rescanning candidates that the change could not have
made competitive; see docs/search.md ("Incremental rounds").

Exit rule: the float64 form of :mod:`dyce_search.exit_rule`, ``np.float64(conf)
>= t`` with t the float64 threshold of the configuration (no preparation).
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
    n_correct, cost_sum = totals(e, c1, cum)
    return e, e2, c1, c2, cum, n_correct, cost_sum


@njit(cache=True)
def totals(e, c1, cum):
    """(n_correct, cost_sum) of a state."""
    n_correct = np.int64(0)
    cost_sum = np.int64(0)
    for m in range(e.shape[0]):
        n_correct += c1[m]
        cost_sum += cum[e[m]]
    return n_correct, cost_sum


@njit(cache=True)
def pack_continuation(p, e, e2, c1, c2, cum, k_at_p, exit_q, code):
    """What every sample does if it does not leave at position p.

    Fills ``code[m]`` with ``2 * d + correct`` where d is the position where m
    leaves when position p lets nobody out (the rest of the configuration
    unchanged), or with ``2 * (P + 1)`` if m leaves before p.

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
def _leaves(conf, k, q, m, t):
    return k >= 0 and np.float64(conf[q, k, m]) >= t


@njit(cache=True)
def _resolve_next_exits(conf, pred, truth, final_correct, k_cfg, t_cfg, pending, after, n_pending, e2, c2):
    """e2 / c2 of the ``pending`` samples: their first exit after position ``after[i]`` (P = the head).

    Position-major, so that the reads of each conf row go in increasing
    sample order however many samples are pending.
    """
    P = k_cfg.shape[0]
    alive = n_pending
    done = np.zeros(n_pending, np.bool_)
    for r in range(P):
        if alive == 0:
            break
        k = k_cfg[r]
        if k < 0:
            continue
        t = t_cfg[r]
        for i in range(n_pending):
            if done[i] or after[i] >= r:
                continue
            m = pending[i]
            if np.float64(conf[r, k, m]) >= t:
                e2[m] = r
                c2[m] = np.int8(1) if pred[r, k, m] == truth[m] else np.int8(0)
                done[i] = True
                alive -= 1
    for i in range(n_pending):
        if not done[i]:
            m = pending[i]
            e2[m] = P
            c2[m] = final_correct[m]


@njit(cache=True)
def apply_change(conf, pred, truth, final_correct, exit_q, k_cfg, t_cfg, q, k_new, t_new,
                 e, e2, c1, c2, cum, a_correct, a_cost, slack):
    """Set position q to exit type ``k_new`` (-1: none) with threshold ``t_new``; update the state in place.

    Parameters
    ----------
    k_cfg, t_cfg : int64 / float64 [P]
        The configuration, changed in place at q.
    e, e2, c1, c2, cum
        Its state (:func:`config_state`), updated in place.
    a_correct, a_cost : float64
        Objective coefficients per correct prediction and per quantised cost
        unit (``a_correct <= 0 <= a_cost`` on both objective scales).
    slack : float64 [P, K + 1]
        Lower bounds on what the best option of each candidate (p, k) would
        change f by, relative to the current configuration (column K:
        disabling p). Lowered here, for every position but q, by what the
        change can have taken off them; the caller shifts row q by the change
        of f (its options' own values do not depend on q's setting).

    Returns
    -------
    n_correct, cost_sum : int64
        Totals of the new configuration.

    Notes
    -----
    Let g_m be sample m's change of contribution to f when a candidate at p
    replaces the configuration's choice there (``a_correct * correct +
    a_cost * cost``). A change at q alters g_m only for samples whose
    situation at p changes:

    * p < q: a sample passing p keeps its g_m if the candidate lets it pass,
      and sees minus the change of its own contribution if the candidate
      sends it out at p; a sample leaving at p sees the change of where it
      would continue. The bound adds up the harmful parts: the total
      worsening of all samples (``worse``) plus, per position, the total
      improvement of the continuations of the samples leaving there.
    * p > q: only samples that start or stop reaching p change g_m. One that
      stops reaching p takes away at most ``|a_correct| * c`` (c: it was right
      where it continued) plus ``a_cost`` times the most an exit at p costs
      above the current one (and, if it used to leave at p, what continuing
      from p would have cost it); one that starts reaching p adds at most
      ``|a_correct| * (1 - c)`` plus ``a_cost`` times what leaving at p
      would save it (``cum[d] - cum[p]``, d where it continues) and the
      current exit's cost. Both are summed per position with difference
      arrays over the positions each sample crosses.
    """
    P, K, M = conf.shape
    k_old = k_cfg[q]
    t_old = t_cfg[q]
    e_old = e.copy()
    e2_old = e2.copy()
    c1_old = c1.copy()
    c2_old = c2.copy()
    cum_old = cum.copy()
    k_cfg[q] = k_new
    t_cfg[q] = t_new
    x_old = exit_q[q, k_old] if k_old >= 0 else np.int64(0)
    x_new = exit_q[q, k_new] if k_new >= 0 else np.int64(0)
    for r in range(q, P + 1):
        cum[r] += x_new - x_old

    pending = np.empty(M, np.int64)
    after = np.empty(M, np.int64)
    n_pending = 0
    for m in range(M):
        was = _leaves(conf, k_old, q, m, t_old)
        now = _leaves(conf, k_new, q, m, t_new)
        if not was and not now:
            continue
        ok = np.int8(0)
        if now:
            ok = np.int8(1) if pred[q, k_new, m] == truth[m] else np.int8(0)
        em = e[m]
        if em < q:
            # m never reaches q; q can only be where it would go without its own exit
            if e2[m] == q:
                if now:
                    c2[m] = ok
                else:
                    pending[n_pending] = m
                    after[n_pending] = q
                    n_pending += 1
            elif e2[m] > q and now:
                e2[m] = q
                c2[m] = ok
        elif em == q:
            if now:
                c1[m] = ok
            else:
                e[m] = e2[m]
                c1[m] = c2[m]
                pending[n_pending] = m
                after[n_pending] = e[m]
                n_pending += 1
        else:
            # passed q before, leaves there now
            e2[m] = em
            c2[m] = c1[m]
            e[m] = q
            c1[m] = ok
    if n_pending > 0:
        _resolve_next_exits(conf, pred, truth, final_correct, k_cfg, t_cfg, pending, after, n_pending, e2, c2)

    worse = 0.0
    cont_gain = np.zeros(P + 1)
    # positions (lo, hi] a sample stops (starts) reaching: counts and the sums the bounds need
    stop_count = np.zeros(P + 2)
    stop_correct = np.zeros(P + 2)
    stop_left_here = np.zeros(P + 1)  # at its old exit: what continuing from there would cost
    start_count = np.zeros(P + 2)
    start_wrong = np.zeros(P + 2)
    start_cum = np.zeros(P + 2)
    for m in range(M):
        em = e[m]
        eo = e_old[m]
        if em >= q or eo >= q:
            d_cur = (a_correct * np.float64(c1[m]) + a_cost * np.float64(cum[em])) - (
                a_correct * np.float64(c1_old[m]) + a_cost * np.float64(cum_old[eo]))
            if d_cur > 0.0:
                worse += d_cur
            if em < eo:
                # stops reaching (em, eo]; continued to eo with correctness c1_old
                stop_count[em + 1] += 1.0
                stop_count[eo + 1] -= 1.0
                stop_correct[em + 1] += c1_old[m]
                stop_correct[eo + 1] -= c1_old[m]
                if eo < P:
                    stop_left_here[eo] += np.float64(cum_old[e2_old[m]] - cum_old[eo])
            elif em > eo:
                # starts reaching (eo, em]; continues to em with correctness c1; cum differences
                # after q are the same before and after the change
                start_count[eo + 1] += 1.0
                start_count[em + 1] -= 1.0
                start_wrong[eo + 1] += 1 - c1[m]
                start_wrong[em + 1] -= 1 - c1[m]
                start_cum[eo + 1] += np.float64(cum[em])
                start_cum[em + 1] -= np.float64(cum[em])
        else:
            d_cont = (a_correct * np.float64(c2[m]) + a_cost * np.float64(cum[e2[m]])) - (
                a_correct * np.float64(c2_old[m]) + a_cost * np.float64(cum_old[e2_old[m]]))
            if d_cont < 0.0:
                cont_gain[em] -= d_cont
    n_stop = 0.0
    n_stop_correct = 0.0
    n_start = 0.0
    n_start_wrong = 0.0
    sum_start_cum = 0.0
    abs_correct = abs(a_correct)
    for p in range(P):
        n_stop += stop_count[p]
        n_stop_correct += stop_correct[p]
        n_start += start_count[p]
        n_start_wrong += start_wrong[p]
        sum_start_cum += start_cum[p]
        if p < q:
            loss = worse + cont_gain[p]
        elif p > q:
            x_cur = np.float64(exit_q[p, k_cfg[p]]) if k_cfg[p] >= 0 else 0.0
            dearest = 0.0
            for k in range(K):
                if np.float64(exit_q[p, k]) > dearest:
                    dearest = np.float64(exit_q[p, k])
            loss = (abs_correct * n_stop_correct + a_cost * (n_stop * max(0.0, dearest - x_cur) + stop_left_here[p])
                    + abs_correct * n_start_wrong
                    + a_cost * (sum_start_cum - n_start * np.float64(cum[p]) + n_start * x_cur))
        else:
            continue
        if loss > 0.0:
            for k in range(K + 1):
                slack[p, k] -= loss
    return totals(e, c1, cum)
