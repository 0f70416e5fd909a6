"""Plain-loop references of the paper's equations, for property tests.

Every function here is written from the paper's definitions with Python sets
and loops, independent of the package's kernels, and is deliberately slow.
Positions are 0-based: early positions n = 0..P-1, the head is n = P.
A configuration is given as (exit_types int [P], -1 = none; thresholds float [P]).
"""

from __future__ import annotations

import numpy as np


def truth(cache):
    """Labels if all are known, else the head's predictions (agreement with the head)."""
    if any(int(v) < 0 for v in cache.label):
        return [int(v) for v in cache.final_pred]
    return [int(v) for v in cache.label]


def W(cache, exit_types, thresholds, n):
    """W_n (Eq. 4): samples whose confidence at position n is >= t_n; the head takes all."""
    M = cache.n_samples
    if n == cache.n_positions:
        return set(range(M))  # k_N = 1, t_N = 0: the head accepts every sample
    k = int(exit_types[n])
    if k < 0:
        return set()
    t = float(thresholds[n])
    return {m for m in range(M) if float(cache.conf[n, k, m]) >= t}


def U(cache, exit_types, thresholds, n):
    """U_n (Eq. 5): W_n minus every sample of an earlier W."""
    earlier = set()
    for n2 in range(n):
        earlier |= W(cache, exit_types, thresholds, n2)
    return W(cache, exit_types, thresholds, n) - earlier


def V(cache, exit_types, n):
    """V_n (Eq. 6): samples the exit used at position n classifies correctly."""
    y = truth(cache)
    M = cache.n_samples
    if n == cache.n_positions:
        return {m for m in range(M) if int(cache.final_pred[m]) == y[m]}
    k = int(exit_types[n])
    if k < 0:
        return set()
    return {m for m in range(M) if int(cache.pred[n, k, m]) == y[m]}


def E(cache, exit_types, thresholds):
    """E_n (Eq. 7) for n = 0..P (head last), as a list of ints."""
    return [len(U(cache, exit_types, thresholds, n)) for n in range(cache.n_positions + 1)]


def EC(cache, exit_types, thresholds):
    """EC_n (Eq. 8) for n = 0..P, as a list of ints."""
    return [
        len(U(cache, exit_types, thresholds, n) & V(cache, exit_types, n)) for n in range(cache.n_positions + 1)
    ]


def A_n(cache, exit_types, thresholds):
    """A_n (Eq. 9); NaN where E_n = 0."""
    return [ec / e if e else float("nan") for e, ec in zip(E(cache, exit_types, thresholds), EC(cache, exit_types, thresholds))]


def A_ori(cache):
    """Accuracy of the original model (1 when labels are unknown)."""
    y = truth(cache)
    return sum(int(cache.final_pred[m]) == y[m] for m in range(cache.n_samples)) / cache.n_samples


def A(cache, exit_types, thresholds):
    """A (Eq. 10) = (1 / (M A_ori)) sum_n E_n A_n."""
    total = 0.0
    for e, a in zip(E(cache, exit_types, thresholds), A_n(cache, exit_types, thresholds)):
        if e:
            total += e * a
    return total / (cache.n_samples * A_ori(cache))


def S_Delta(cache, segment=None, exit_cost=None):
    """S_n (sum 1) and Delta_{n,k} from MACs (default) or from explicit cost arrays."""
    if segment is None:
        cumulative = [0] + [int(v) for v in cache.backbone_macs] + [int(cache.total_macs)]
        segment = [cumulative[i + 1] - cumulative[i] for i in range(len(cumulative) - 1)]
        exit_cost = [[float(cache.exit_macs[p, k]) for k in range(cache.n_types)] for p in range(cache.n_positions)]
    total = float(sum(segment))
    S = [float(s) / total for s in segment]
    Delta = [[0.0 if np.isnan(v) else float(v) / total for v in row] for row in exit_cost]
    return S, Delta, total


def C(cache, exit_types, thresholds, segment=None, exit_cost=None):
    """C (Eq. 11) = (1/M) sum_n E_n sum_{n' <= n} (S_{n'} + Delta_{n', k_{n'}}); Delta_{n, none} = 0, Delta_head = 0."""
    S, Delta, _ = S_Delta(cache, segment, exit_cost)
    P = cache.n_positions
    counts = E(cache, exit_types, thresholds)
    total = 0.0
    for n in range(P + 1):
        per_sample = 0.0
        for n2 in range(n + 1):
            per_sample += S[n2]
            if n2 < P and int(exit_types[n2]) >= 0:
                per_sample += Delta[n2][int(exit_types[n2])]
        total += counts[n] * per_sample
    return total / cache.n_samples


def f_paper(cache, exit_types, thresholds, lam, segment=None, exit_cost=None):
    """f(k, t, lambda) (Eq. 12) = lambda (1 - A) + (1 - lambda) C."""
    return lam * (1 - A(cache, exit_types, thresholds)) + (1 - lam) * C(cache, exit_types, thresholds, segment, exit_cost)


def f_normalized(cache, exit_types, thresholds, lam, segment=None, exit_cost=None):
    """The released code's scale: lambda (1 - acc') + (1 - lambda) C'.

    acc' = (accuracy - a_min) / (A_ori - a_min), C' = (C total - c_min) / (total - c_min),
    a_min = standalone accuracy of the first available exit type at the first
    position having one (p0), c_min = cost of segments 0..p0.
    """
    y = truth(cache)
    M = cache.n_samples
    p0 = next(p for p in range(cache.n_positions) if any(cache.available[p]))
    k0 = next(k for k in range(cache.n_types) if cache.available[p0, k])
    a_min = sum(int(cache.pred[p0, k0, m]) == y[m] for m in range(M)) / M
    S, _, total = S_Delta(cache, segment, exit_cost)
    c_min = sum(S[: p0 + 1]) * total
    accuracy = A(cache, exit_types, thresholds) * A_ori(cache)
    acc_n = (accuracy - a_min) / (A_ori(cache) - a_min)
    cost_n = (C(cache, exit_types, thresholds, segment, exit_cost) * total - c_min) / (total - c_min)
    return lam * (1 - acc_n) + (1 - lam) * cost_n


def simulate(cache, exit_types, thresholds, segment=None, exit_cost=None):
    """Algorithm 1 per sample: (position, prediction, correct, cost in cost units) lists."""
    S, Delta, total = S_Delta(cache, segment, exit_cost)
    y = truth(cache)
    P = cache.n_positions
    out = ([], [], [], [])
    for m in range(cache.n_samples):
        cost = 0.0
        for n in range(P + 1):
            cost += S[n] * total
            if n == P:
                pred = int(cache.final_pred[m])
                break
            k = int(exit_types[n])
            if k < 0:
                continue
            cost += Delta[n][k] * total
            if float(cache.conf[n, k, m]) >= float(thresholds[n]):
                pred = int(cache.pred[n, k, m])
                break
        for lst, v in zip(out, (n, pred, pred == y[m], cost)):
            lst.append(v)
    return out


def pareto_rows(rel_cost, rel_accuracy):
    """Indices of non-dominated points (lower cost, higher accuracy) by pairwise comparison.

    Of several identical points only the first (lowest index) is kept. The
    result is sorted by cost, then by accuracy (highest first), then by index.
    """
    n = len(rel_cost)
    keep = []
    for i in range(n):
        dominated = False
        for j in range(n):
            if j == i:
                continue
            no_worse = rel_cost[j] <= rel_cost[i] and rel_accuracy[j] >= rel_accuracy[i]
            better = rel_cost[j] < rel_cost[i] or rel_accuracy[j] > rel_accuracy[i]
            same_earlier = rel_cost[j] == rel_cost[i] and rel_accuracy[j] == rel_accuracy[i] and j < i
            if (no_worse and better) or same_earlier:
                dominated = True
                break
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (rel_cost[i], -rel_accuracy[i], i))
