"""Exact binomial statistics: p-values, intervals and the conservative accuracy of the released code.

One place for every statistical statement the package prints: certified
selection (:mod:`dyce_search.selection`), accuracy intervals and Table II
bounds in ``analysis``, and the conservative objective
(:func:`beta_lower_bound`). All are exact for binomial counts (no normal
approximation), so they hold for small splits such as the 400 samples of the
digits calibration cache.
"""

from __future__ import annotations

import numpy as np


def _counts(k, n):
    k = np.asarray(k, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    if np.any(n < 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"need 0 <= k <= n, got k={k!r}, n={n!r}")
    return k, n


def binomial_pvalue(k, n, p0):
    """p-value of ``H0: p >= p0`` against ``p < p0`` after ``k`` events in ``n`` trials: ``P(Bin(n, p0) <= k)``.

    Exact; for every true p >= p0 the probability that it is <= u is at most
    u (the binomial cdf falls as p grows), the property fixed-sequence
    testing needs. Equals ``scipy.stats.binomtest(k, n, p0, alternative="less").pvalue``.
    n = 0 gives 1 (no evidence).
    """
    from scipy.stats import binom

    k, n = _counts(k, n)
    p0 = float(p0)
    if not 0.0 <= p0 <= 1.0:
        raise ValueError(f"p0 must be in [0, 1], got {p0!r}")
    out = np.where(n > 0, binom.cdf(k, np.maximum(n, 1), p0), 1.0)
    return float(out) if out.ndim == 0 else out


def upper_bound(k, n, delta):
    """One-sided Clopper-Pearson upper confidence bound: p <= bound with probability >= 1 - ``delta``.

    The largest p0 with ``binomial_pvalue(k, n, p0) >= delta``: the Beta(k + 1,
    n - k) quantile at 1 - delta, 1 when k = n (or n = 0).
    """
    from scipy.stats import beta

    k, n = _counts(k, n)
    delta = check_open_unit(delta, "delta")
    out = np.where(k < n, beta.ppf(1.0 - delta, k + 1, np.maximum(n - k, 1)), 1.0)
    return float(out) if out.ndim == 0 else out


def binomial_interval(k, n, confidence=0.95):
    """Two-sided exact (Clopper-Pearson) interval for a proportion: (low, high).

    Equals ``scipy.stats.binomtest(k, n).proportion_ci(confidence, method="exact")``;
    (0, 1) when n = 0.
    """
    from scipy.stats import beta

    k, n = _counts(k, n)
    alpha = 1.0 - check_open_unit(confidence, "confidence")
    low = np.where(k > 0, beta.ppf(alpha / 2, np.maximum(k, 1), n - k + 1), 0.0)
    high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1)), 1.0)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def beta_lower_bound(correct, wrong, alpha):
    """The authors' conservative accuracy of a group of samples: ``betaincinv(1 + correct, 1 + wrong, alpha)``.

    The ``alpha`` quantile of Beta(1 + correct, 1 + wrong), the posterior of the
    group's accuracy under a uniform prior. A heuristic pessimism, not a
    frequentist guarantee; see :func:`dyce_search.select` for one.
    """
    from scipy.special import betaincinv

    alpha = check_open_unit(alpha, "alpha")
    correct = np.asarray(correct, dtype=np.float64)
    wrong = np.asarray(wrong, dtype=np.float64)
    out = betaincinv(1.0 + correct, 1.0 + wrong, alpha)
    return float(out) if out.ndim == 0 else out


def check_open_unit(value, name: str) -> float:
    """``value`` as a float strictly between 0 and 1 (delta, alpha, a confidence, a fraction).

    Raises
    ------
    ValueError
        Naming ``name``: not a number, or outside (0, 1).
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < number < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return number


__all__ = ["binomial_pvalue", "upper_bound", "binomial_interval", "beta_lower_bound", "check_open_unit"]
