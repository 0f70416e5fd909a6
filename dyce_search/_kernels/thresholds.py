"""Kernels of Eq. 13: the best threshold of one exit with the rest of the configuration fixed.

The objective of a configuration is the affine function of two exact
integers ``f = a0 + a_correct * n_correct + a_cost_q * cost_sum``, evaluated
in exactly this float64 operation order by :func:`objective_value` (and by
the plain-loop references in ``tests/naive_search.py``), so two
configurations with the same counts always get bit-identical values,
independent of sample order and thread count.

Presorted columns (``dyce_search._kernels.search.presort``) pack each entry
of column (p, k), sorted by decreasing confidence, into one int32 ``key``:
bits 0-28 the sample index, bit 29 whether exit (p, k) is correct on it, bit
30 whether it is the last entry of a run of equal confidences (a candidate
threshold boundary: ``conf >= t`` lets a whole run exit together).
The continuation codes come from
:func:`dyce_search._kernels.state.pack_continuation`.

Three ways to choose t for one exit:

* :func:`scan_thresholds`: the exact global minimum over every candidate
  threshold, one pass over the presorted column;
* :func:`place_threshold`: where the returned threshold goes inside the
  chosen gap (strictly between two recorded confidences);
* :func:`bounded_minimum`: the paper's ``scipy.optimize.minimize_scalar(
  method="bounded", bounds=(0, 1))``, ported step for step
  (:func:`fminbound`) and evaluated in O(log M) per step on the column's
  prefix sums (:func:`column_profile`), so it returns scipy's t and f bit for bit.

Exit rule: the float64 form of :mod:`dyce_search.exit_rule`, ``np.float64(conf)
>= t`` (:func:`leaving_count`, :func:`value_at_threshold`). A run of equal
float32 confidences is a run of equal float64 ones, so the candidate
boundaries of the presorted columns are those of the rule.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

SAMPLE_BITS = 29
SAMPLE_MASK = (1 << SAMPLE_BITS) - 1
CORRECT_BIT = 1 << SAMPLE_BITS
LAST_BIT = 1 << (SAMPLE_BITS + 1)

#: scipy's ``_minimize_scalar_bounded`` defaults (``xatol``, ``maxiter``).
BOUNDED_XATOL = 1e-5
BOUNDED_MAXITER = 500


@njit(cache=True, inline="always")
def objective_value(a0, a_correct, a_cost_q, n_correct, cost_sum):
    """f = a0 + a_correct * n_correct + a_cost_q * cost_sum (Eq. 12 as affine counts)."""
    return a0 + a_correct * np.float64(n_correct) + a_cost_q * np.float64(cost_sum)


@njit(cache=True, inline="always")
def first_reaching(keys, n_valid, code, sentinel):
    """Index of the first presorted entry whose sample reaches p (``n_valid`` if none).

    Runs before it hold "nobody leaves", which is no candidate threshold.
    """
    i = 0
    while i < n_valid and code[keys[i] & SAMPLE_MASK] >= sentinel:
        i += 1
    return i


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
        From :func:`~dyce_search._kernels.state.pack_continuation`.
    saved : int64 [P + 2]
        From :func:`~dyce_search._kernels.state.saved_costs`.
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
    start = first_reaching(keys, n_valid, code, sentinel)
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
def between(high, low):
    """A float64 strictly between ``low < high`` (their midpoint when it is), else ``high``.

    ``high`` and ``low`` are recorded float32 confidences promoted to
    float64; two distinct float32 values always have a float64 strictly
    between them, so the fallback to ``high`` only happens when ``low >= high``.
    """
    if not low < high:
        return high
    mid = 0.5 * (high + low)
    if low < mid < high:
        return mid
    return np.nextafter(high, -np.inf)


@njit(cache=True)
def place_threshold(keys, n_valid, code, i, conf_col, sentinel):
    """The threshold that lets run ``i`` and every higher one out: strictly inside the gap below it.

    The minimum of Eq. 13 holds for every t in (c_lo, c_hi], c_hi the
    confidence of the chosen run and c_lo the next lower confidence of a
    sample that reaches p (0 if there is none). Returning the midpoint
    instead of c_hi itself means a confidence recomputed a few ulps lower at
    run time (another machine, another batch size) still leaves where the
    search assumed.

    Parameters
    ----------
    keys, n_valid
        The presorted column (p, k).
    code : int16 [M]
        Continuation codes at p (``>= sentinel``: does not reach p).
    i : int
        Index into ``keys`` of the last entry of the chosen run.
    conf_col : float32 [M]
        conf[p, k] in sample order.
    sentinel : int
        ``2 * (P + 1)``.
    """
    high = np.float64(conf_col[keys[i] & SAMPLE_MASK])
    j = i + 1
    while j < n_valid and code[keys[j] & SAMPLE_MASK] >= sentinel:
        j += 1
    low = np.float64(conf_col[keys[j] & SAMPLE_MASK]) if j < n_valid else 0.0
    return between(high, low)


@njit(cache=True)
def column_profile(keys, n_valid, code, saved, d_correct, d_cost):
    """Prefix sums of Eq. 13's changes along the presorted column (p, k).

    ``d_correct[i]`` / ``d_cost[i]`` (i = 0..n_valid): the change of
    ``n_correct`` and the cost saved when the first i entries leave at p
    (entries of samples that do not reach p change nothing).
    """
    sentinel = 2 * (saved.shape[0] - 1)
    dc = np.int64(0)
    dk = np.int64(0)
    d_correct[0] = 0
    d_cost[0] = 0
    for i in range(n_valid):
        key = keys[i]
        c = np.int64(code[key & SAMPLE_MASK])
        r = np.int64(c < sentinel)
        dc += r * (((key >> SAMPLE_BITS) & 1) - (c & 1))
        dk += saved[c >> 1]
        d_correct[i + 1] = dc
        d_cost[i + 1] = dk


@njit(cache=True)
def leaving_count(keys, n_valid, conf_col, t):
    """How many of the first ``n_valid`` entries of a presorted column have ``float64(conf) >= t``."""
    lo = 0
    hi = n_valid
    while lo < hi:
        mid = (lo + hi) // 2
        if np.float64(conf_col[keys[mid] & SAMPLE_MASK]) >= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _profile_value(t, keys, n_valid, conf_col, d_correct, d_cost, n_correct0, cost_base, a0, a_correct, a_cost_q):
    i = leaving_count(keys, n_valid, conf_col, t)
    return objective_value(a0, a_correct, a_cost_q, n_correct0 + d_correct[i], cost_base - d_cost[i])


@njit(cache=True)
def fminbound(keys, n_valid, conf_col, d_correct, d_cost, n_correct0, cost_base, a0, a_correct, a_cost_q,
              shared_thresholds):
    """scipy's bounded Brent minimiser (``_minimize_scalar_bounded``) on [0, 1], operation for operation.

    The function minimised is f(t) of one exit (``shared_thresholds`` empty:
    counts after the first ``leaving_count(t)`` entries of the column
    profile) or of the shared-threshold baseline (``shared_thresholds``: the
    decreasing candidate thresholds, counts after the last one >= t, the
    first entry being "nobody leaves"). Iterates, tolerances
    (``xatol = 1e-5``, ``maxiter = 500``) and comparisons follow scipy, so
    the result equals ``minimize_scalar(f, bounds=(0, 1), method="bounded")``.

    Returns
    -------
    x, fx : float64
    """
    sqrt_eps = math.sqrt(2.2e-16)
    golden_mean = 0.5 * (3.0 - math.sqrt(5.0))
    xatol = BOUNDED_XATOL
    a = 0.0
    b = 1.0
    fulc = a + golden_mean * (b - a)
    nfc = fulc
    xf = fulc
    rat = 0.0
    e = 0.0
    x = xf
    fx = _bounded_value(x, keys, n_valid, conf_col, d_correct, d_cost, n_correct0, cost_base, a0, a_correct,
                        a_cost_q, shared_thresholds)
    num = 1
    ffulc = fx
    fnfc = fx
    xm = 0.5 * (a + b)
    tol1 = sqrt_eps * abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    while abs(xf - xm) > (tol2 - 0.5 * (b - a)):
        golden = True
        if abs(e) > tol1:
            golden = False
            r = (xf - nfc) * (fx - ffulc)
            q = (xf - fulc) * (fx - fnfc)
            p = (xf - fulc) * q - (xf - nfc) * r
            q = 2.0 * (q - r)
            if q > 0.0:
                p = -p
            q = abs(q)
            r = e
            e = rat
            if (abs(p) < abs(0.5 * q * r)) and (p > q * (a - xf)) and (p < q * (b - xf)):
                rat = (p + 0.0) / q
                x = xf + rat
                if ((x - a) < tol2) or ((b - x) < tol2):
                    rat = tol1 * _sign_or_one(xm - xf)
            else:
                golden = True
        if golden:
            if xf >= xm:
                e = a - xf
            else:
                e = b - xf
            rat = golden_mean * e
        x = xf + _sign_or_one(rat) * max(abs(rat), tol1)
        fu = _bounded_value(x, keys, n_valid, conf_col, d_correct, d_cost, n_correct0, cost_base, a0, a_correct,
                            a_cost_q, shared_thresholds)
        num += 1
        if fu <= fx:
            if x >= xf:
                a = xf
            else:
                b = xf
            fulc = nfc
            ffulc = fnfc
            nfc = xf
            fnfc = fx
            xf = x
            fx = fu
        else:
            if x < xf:
                a = x
            else:
                b = x
            if (fu <= fnfc) or (nfc == xf):
                fulc = nfc
                ffulc = fnfc
                nfc = x
                fnfc = fu
            elif (fu <= ffulc) or (fulc == xf) or (fulc == nfc):
                fulc = x
                ffulc = fu
        xm = 0.5 * (a + b)
        tol1 = sqrt_eps * abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
        if num >= BOUNDED_MAXITER:
            break
    return xf, fx


@njit(cache=True, inline="always")
def _sign_or_one(v):
    """numpy's ``sign(v) + (v == 0)``: -1 for negative, +1 otherwise."""
    return -1.0 if v < 0.0 else 1.0


@njit(cache=True)
def _bounded_value(t, keys, n_valid, conf_col, d_correct, d_cost, n_correct0, cost_base, a0, a_correct, a_cost_q,
                   shared_thresholds):
    if shared_thresholds.shape[0] == 0:
        return _profile_value(t, keys, n_valid, conf_col, d_correct, d_cost, n_correct0, cost_base, a0, a_correct,
                              a_cost_q)
    # candidates >= t among the decreasing shared thresholds; entry 0 of the counts is "nobody leaves"
    lo = 0
    hi = shared_thresholds.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if shared_thresholds[mid] >= t:
            lo = mid + 1
        else:
            hi = mid
    return objective_value(a0, a_correct, a_cost_q, d_correct[lo], d_cost[lo])


@njit(cache=True)
def bounded_minimum(keys, n_valid, code, saved, conf_col, n_reach, n_correct0, cost_base, a0, a_correct, a_cost_q,
                    d_correct, d_cost):
    """The paper's bounded minimisation of Eq. 13 for one exit, plus the exact minimum of the same column.

    Parameters are those of :func:`scan_thresholds` plus ``conf_col``
    (conf[p, k] in sample order) and two int64 [M + 1] work arrays.

    Returns
    -------
    t, f : float64
        scipy's bounded minimiser on [0, 1] (NaN, +inf when no sample reaches p).
    exact_f : float64
        The exact minimum over the candidate thresholds (+inf when none), a
        lower bound of ``f`` used by the incremental rounds.
    """
    if n_reach == 0:
        return np.nan, np.inf, np.inf
    column_profile(keys, n_valid, code, saved, d_correct, d_cost)
    exact_f = np.inf
    for i in range(first_reaching(keys, n_valid, code, 2 * (saved.shape[0] - 1)), n_valid):
        if keys[i] & LAST_BIT:
            f = objective_value(a0, a_correct, a_cost_q, n_correct0 + d_correct[i + 1], cost_base - d_cost[i + 1])
            if f < exact_f:
                exact_f = f
    empty = np.empty(0, np.float64)
    t, f = fminbound(keys, n_valid, conf_col, d_correct, d_cost, n_correct0, cost_base, a0, a_correct, a_cost_q,
                     empty)
    return t, f, exact_f


@njit(cache=True)
def value_at_threshold(conf_col, pred_col, truth, t, code, saved, n_correct0, cost_base):
    """Counts of the configuration with threshold t at the changed position.

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
