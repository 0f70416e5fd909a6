"""Kernels of Eq. 4-8: where each sample exits under one configuration.

Both kernels see a configuration as its E enabled exits in depth order
(``exit_pos[j]``, ``exit_type[j]``, ``exit_threshold[j]``, j = 0..E-1);
slot E is the head. A sample leaves at the first slot j whose confidence is
>= the threshold, otherwise at the head.

Exit rule: the float32 form of :mod:`dyce_search.exit_rule`. Thresholds
arrive as float32 values prepared by
:func:`dyce_search.exit_rule.float32_thresholds` (the smallest float32 that
is >= the float64 threshold), so ``conf >= t32`` in float32 is exactly
``float64(conf) >= t`` and the comparison vectorises 8 wide.

Samples are split into fixed-size blocks (``BLOCK``) so that each parallel
iteration owns its own count row; the serial reduction over blocks is in
block order, so the result never depends on the number of threads. Within a
block every enabled exit is one branch-free sweep over its contiguous
[BLOCK] slices of ``conf``/``pred``, masked by the samples still in flight.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Samples per parallel work item. Fixed (not derived from the thread count)
#: so that block boundaries, and therefore every reduction, are the same for
#: any number of threads.
BLOCK = 2048


@njit(cache=True)
def _count_block(conf, pred, final_pred, truth, exit_pos, exit_type, exit_threshold, start, stop, counts, correct):
    """Add E_j / EC_j of samples start..stop-1 into ``counts`` / ``correct`` (length E + 1)."""
    n_enabled = exit_pos.shape[0]
    n = stop - start
    in_flight = np.ones(n, np.uint8)
    tr = truth[start:stop]
    n_alive = n
    for j in range(n_enabled):
        if n_alive == 0:
            break
        c = conf[exit_pos[j], exit_type[j], start:stop]
        y = pred[exit_pos[j], exit_type[j], start:stop]
        t = exit_threshold[j]
        n_out = 0
        n_right = 0
        for i in range(n):
            leaves = in_flight[i] & np.uint8(c[i] >= t)
            in_flight[i] ^= leaves
            n_out += leaves
            n_right += leaves & np.uint8(y[i] == tr[i])
        counts[j] += n_out
        correct[j] += n_right
        n_alive -= n_out
    fp = final_pred[start:stop]
    n_out = 0
    n_right = 0
    for i in range(n):
        n_out += in_flight[i]
        n_right += in_flight[i] & np.uint8(fp[i] == tr[i])
    counts[n_enabled] += n_out
    correct[n_enabled] += n_right


@njit(cache=True)
def _slot_block(conf, exit_pos, exit_type, exit_threshold, start, stop, slot):
    """Write into ``slot[start:stop]`` the slot each sample leaves at (E = head)."""
    n_enabled = exit_pos.shape[0]
    n = stop - start
    in_flight = np.ones(n, np.uint8)
    s = slot[start:stop]
    for i in range(n):
        s[i] = n_enabled
    n_alive = n
    for j in range(n_enabled):
        if n_alive == 0:
            break
        c = conf[exit_pos[j], exit_type[j], start:stop]
        t = exit_threshold[j]
        jj = np.int32(j)
        n_out = 0
        for i in range(n):
            leaves = in_flight[i] & np.uint8(c[i] >= t)
            in_flight[i] ^= leaves
            s[i] = jj if leaves else s[i]
            n_out += leaves
        n_alive -= n_out


@njit(cache=True)
def _reduce_blocks(block_counts, block_correct):
    """Sum the per-block rows in block order."""
    n_blocks, n_slots = block_counts.shape
    counts = np.zeros(n_slots, np.int64)
    correct = np.zeros(n_slots, np.int64)
    for b in range(n_blocks):
        for j in range(n_slots):
            counts[j] += block_counts[b, j]
            correct[j] += block_correct[b, j]
    return counts, correct


@njit(parallel=True, cache=True)
def exit_counts(conf, pred, final_pred, truth, exit_pos, exit_type, exit_threshold):
    """Per-slot exit counts E and correct-exit counts EC (Eq. 7 and 8).

    Parameters
    ----------
    conf : float32 [P, K, M]
    pred : int32 [P, K, M]
    final_pred : int32 [M]
    truth : int32 [M]
        Reference class per sample (labels, or the head's prediction when
        labels are unknown).
    exit_pos, exit_type : int64 [E]
        Enabled exits in increasing position order.
    exit_threshold : float32 [E]
        Float32 thresholds from :func:`dyce_search.exit_rule.float32_thresholds`.

    Returns
    -------
    counts : int64 [E + 1]
        Samples leaving at each enabled exit, head last.
    correct : int64 [E + 1]
        Of those, the ones whose prediction equals ``truth``.
    """
    n_samples = truth.shape[0]
    n_slots = exit_pos.shape[0] + 1
    n_blocks = (n_samples + BLOCK - 1) // BLOCK
    block_counts = np.zeros((n_blocks, n_slots), np.int64)
    block_correct = np.zeros((n_blocks, n_slots), np.int64)
    for b in prange(n_blocks):
        _count_block(
            conf, pred, final_pred, truth, exit_pos, exit_type, exit_threshold,
            b * BLOCK, min((b + 1) * BLOCK, n_samples), block_counts[b], block_correct[b],
        )
    return _reduce_blocks(block_counts, block_correct)


@njit(cache=True)
def exit_counts_serial(conf, pred, final_pred, truth, exit_pos, exit_type, exit_threshold):
    """:func:`exit_counts` on the calling thread, block for block the same.

    For small work (one block, or no enabled exit) where waking the thread
    pool costs more than the work itself.
    """
    n_samples = truth.shape[0]
    n_slots = exit_pos.shape[0] + 1
    n_blocks = (n_samples + BLOCK - 1) // BLOCK
    block_counts = np.zeros((n_blocks, n_slots), np.int64)
    block_correct = np.zeros((n_blocks, n_slots), np.int64)
    for b in range(n_blocks):
        _count_block(
            conf, pred, final_pred, truth, exit_pos, exit_type, exit_threshold,
            b * BLOCK, min((b + 1) * BLOCK, n_samples), block_counts[b], block_correct[b],
        )
    return _reduce_blocks(block_counts, block_correct)


@njit(cache=True)
def _trace_block(conf, pred, final_pred, truth, exit_pos, exit_type, exit_threshold, slot_cost, start, stop,
                 slot, out_pred, correct, cost):
    """Fill the per-sample outputs of :func:`exit_trace` for samples start..stop-1."""
    n_enabled = exit_pos.shape[0]
    _slot_block(conf, exit_pos, exit_type, exit_threshold, start, stop, slot)
    for m in range(start, stop):
        j = slot[m]
        p = pred[exit_pos[j], exit_type[j], m] if j < n_enabled else final_pred[m]
        out_pred[m] = p
        correct[m] = p == truth[m]
        cost[m] = slot_cost[j]


@njit(parallel=True, cache=True)
def exit_trace(conf, pred, final_pred, truth, exit_pos, exit_type, exit_threshold, slot_cost):
    """Per-sample exit slot, prediction, correctness and cost (Algorithm 1 replayed).

    Parameters are those of :func:`exit_counts`, plus

    slot_cost : float64 [E + 1]
        Cost of a sample that leaves at each slot (head last).

    Returns
    -------
    slot : int32 [M]
        Index j of the enabled exit each sample leaves at, E for the head.
    out_pred : int32 [M]
    correct : bool [M]
    cost : float64 [M]
    """
    n_samples = truth.shape[0]
    n_blocks = (n_samples + BLOCK - 1) // BLOCK
    slot = np.empty(n_samples, np.int32)
    out_pred = np.empty(n_samples, np.int32)
    correct = np.empty(n_samples, np.bool_)
    cost = np.empty(n_samples, np.float64)
    for b in prange(n_blocks):
        _trace_block(
            conf, pred, final_pred, truth, exit_pos, exit_type, exit_threshold, slot_cost,
            b * BLOCK, min((b + 1) * BLOCK, n_samples), slot, out_pred, correct, cost,
        )
    return slot, out_pred, correct, cost


@njit(cache=True)
def exit_trace_serial(conf, pred, final_pred, truth, exit_pos, exit_type, exit_threshold, slot_cost):
    """:func:`exit_trace` on the calling thread (small work)."""
    n_samples = truth.shape[0]
    n_blocks = (n_samples + BLOCK - 1) // BLOCK
    slot = np.empty(n_samples, np.int32)
    out_pred = np.empty(n_samples, np.int32)
    correct = np.empty(n_samples, np.bool_)
    cost = np.empty(n_samples, np.float64)
    for b in range(n_blocks):
        _trace_block(
            conf, pred, final_pred, truth, exit_pos, exit_type, exit_threshold, slot_cost,
            b * BLOCK, min((b + 1) * BLOCK, n_samples), slot, out_pred, correct, cost,
        )
    return slot, out_pred, correct, cost
