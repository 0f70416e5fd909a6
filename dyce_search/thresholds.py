"""Minimising Eq. 13 over the threshold t of one exit (n, k) with the rest of G fixed.

Two methods:

``"exact"`` (default)
    f(t) is a step function of t: it only changes when t passes the
    confidence of a sample that reaches n. Its global minimum over every
    distinct confidence of those samples is found in one pass over the
    samples sorted by decreasing confidence, with prefix sums of each sample's
    change to ``n_correct`` and ``cost_sum``. Ties exit together (a sample
    leaves when conf >= t); among equal minima the largest threshold wins.
``"bounded"``
    The paper's ``scipy.optimize.minimize_scalar(method="bounded",
    bounds=(0, 1))`` on the same objective. It evaluates f at arbitrary t and
    can stop at a non-optimal step; it is never better than ``"exact"``
    except where t lies above every confidence (nobody leaves at n but the
    exit is still paid for), which the searches cover with the k_c = none
    option.

Objective values are computed from exact integer counts (see
:class:`Prepared`), so both methods, the searches and the brute-force
references compare bit-identical numbers.
"""

from __future__ import annotations

import math

import numpy as np

from ._kernels.search import column_keys
from ._kernels.thresholds import config_state, objective_value, pack_continuation, saved_costs, scan_thresholds
from ._kernels.thresholds import SAMPLE_MASK, value_at_threshold
from .costs import Costs
from .errors import CacheError
from .objective import Objective, reference_labels

METHODS = ("exact", "bounded")

#: Largest total (M samples x the most a sample can cost) in quantised units;
#: below 2**53 every count-weighted cost sum is an exact float64 integer.
_QUANTUM_BUDGET = 2.0**53


class Prepared:
    """Kernel inputs shared by threshold minimisation and the searches.

    Costs are quantised to integers: ``seg_q = rint(segment * scale)``,
    ``exit_q = rint(exit * scale)`` with ``scale`` the largest power of two
    for which M times the most expensive sample (every segment and, at each
    position, its dearest exit) stays below 2**53. Every ``cost_sum`` is then
    an exact integer whatever the summation order. MAC counts are integers
    and stay exact (scale >= 1 unless M x MACs exceed 2**53); other units are
    rounded to 2**-53 of that total.

    Attributes
    ----------
    conf : float32 [P, K, M]
    pred : int32 [P, K, M]
    truth : int32 [M]
    final_correct : int8 [M]
    seg_q : int64 [P + 1]
    exit_q : int64 [P, K]
    scale : float
        Quantised units per cost unit.
    costs : Costs
    objective : Objective
    """

    def __init__(self, cache, costs=None, objective="paper"):
        P, K, M = cache.n_positions, cache.n_types, cache.n_samples
        if M >= 1 << 29:
            raise CacheError(f"searches support fewer than {1 << 29} samples, the cache has {M}")
        if P >= 1 << 14:
            raise CacheError(f"searches support fewer than {1 << 14} positions, the cache has {P}")
        self.conf = _contiguous(cache.conf, np.float32, (P, K, M), "conf")
        self.pred = _contiguous(cache.pred, np.int32, (P, K, M), "pred")
        self.available = _contiguous(cache.available, np.bool_, (P, K), "available")
        self.truth, self.labels_known = reference_labels(cache)
        self.final_correct = (np.asarray(cache.final_pred) == self.truth).astype(np.int8)
        self.costs = as_costs(cache, costs)
        self.objective = Objective.build(objective, cache, self.costs)
        segment = self.costs.segment
        exit_cost = np.where(self.available, self.costs.exit_costs(), 0.0)
        most = float(segment.sum() + exit_cost.max(axis=1).sum())
        self.scale = 2.0 ** math.floor(math.log2(_QUANTUM_BUDGET / (M * most)))
        self.seg_q = np.rint(segment * self.scale).astype(np.int64)
        self.exit_q = np.rint(exit_cost * self.scale).astype(np.int64)

    @property
    def shape(self):
        return self.conf.shape

    def coefficients(self, lam) -> tuple[float, float, float]:
        """(a0, a_correct, a_cost per quantised unit) for ``lam``."""
        a0, a_correct, a_cost = self.objective.coefficients(lam)
        return float(a0), float(a_correct), float(a_cost) / self.scale

    def coefficient_table(self, lambdas) -> np.ndarray:
        """float64 [L, 3]: :meth:`coefficients` per lambda."""
        return np.array([self.coefficients(lam) for lam in lambdas], np.float64).reshape(len(lambdas), 3)

    def state(self, k_cfg, t_cfg):
        """``config_state`` of a configuration given as int64 / float64 [P] arrays."""
        return config_state(self.conf, self.pred, self.truth, self.final_correct,
                            np.ascontiguousarray(k_cfg, np.int64), np.ascontiguousarray(t_cfg, np.float64),
                            self.seg_q, self.exit_q)


def as_costs(cache, costs) -> Costs:
    """Costs from None (the cache's MACs), a :class:`Costs`, or a path to a Costs JSON, checked against ``cache``."""
    if costs is None:
        return Costs.from_cache(cache)
    if not isinstance(costs, Costs):
        costs = Costs.load(costs)
    return costs.check(cache)


def _contiguous(a, dtype, shape, name):
    a = np.asarray(a)
    if a.dtype != dtype or a.shape != shape:
        raise CacheError(f"cache.{name} must be {np.dtype(dtype).name} {shape}, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


class Candidate:
    """Eq. 13 at one position of a fixed configuration, for any exit type and threshold.

    Built once per (configuration, position); :meth:`exact` and :meth:`bounded`
    minimise over t for one exit type, :meth:`value` evaluates one t.
    """

    def __init__(self, prep: Prepared, state, k_cfg, p: int, lam: float):
        self.prep = prep
        self.p = p
        e, e2, c1, c2, cum, _, _ = state
        self.code = np.empty(e.shape[0], np.int16)
        self.n_reach, self.n_correct0, self.cost_sum0 = pack_continuation(
            p, e, e2, c1, c2, cum, int(k_cfg[p]), prep.exit_q, self.code
        )
        self.saved = saved_costs(cum, p)
        self.coefs = prep.coefficients(lam)

    def disabled(self) -> float:
        """f with position p disabled (k_c = none)."""
        return objective_value(*self.coefs, self.n_correct0, self.cost_sum0)

    def _cost_base(self, k):
        return self.cost_sum0 + self.n_reach * self.prep.exit_q[self.p, k]

    def value(self, k: int, t: float) -> float:
        """f with exit type k and threshold t at p."""
        n_correct, cost_sum = value_at_threshold(
            self.prep.conf[self.p, k], self.prep.pred[self.p, k], self.prep.truth, float(t),
            self.code, self.saved, self.n_correct0, self._cost_base(k),
        )
        return objective_value(*self.coefs, n_correct, cost_sum)

    def exact(self, k: int, keys=None, n_valid=None) -> tuple[float, float]:
        """(t, f): global minimum over the distinct confidences of the samples reaching p.

        ``keys`` / ``n_valid``: the presorted column (p, k) if already at hand.
        Returns (nan, inf) when no sample reaches p.
        """
        if keys is None:
            keys = np.empty(self.code.shape[0], np.int32)
            n_valid = column_keys(self.prep.conf[self.p, k], self.prep.pred[self.p, k], self.prep.truth, keys)
        if self.n_reach == 0:
            return math.nan, math.inf
        f, i = scan_thresholds(keys, n_valid, self.code, self.saved, self.n_reach, self.n_correct0,
                               self._cost_base(k), *self.coefs)
        if i < 0:
            return math.nan, math.inf
        return float(self.prep.conf[self.p, k, keys[i] & SAMPLE_MASK]), float(f)

    def bounded(self, k: int) -> tuple[float, float]:
        """(t, f) from ``scipy.optimize.minimize_scalar(method="bounded", bounds=(0, 1))`` (the paper's)."""
        from scipy.optimize import minimize_scalar

        if self.n_reach == 0:
            return math.nan, math.inf
        res = minimize_scalar(lambda t: self.value(k, t), bounds=(0.0, 1.0), method="bounded")
        return float(res.x), float(res.fun)


def minimize_threshold(cache, config, position, exit_type, lam, method="exact", costs=None, objective="paper"):
    """Best threshold t for exit ``exit_type`` at ``position``, the rest of ``config`` fixed (Eq. 13).

    Parameters
    ----------
    cache : ExitCache
    config : Config or (exit_types, thresholds)
        G = {k, t}; its entry at ``position`` is replaced by (exit_type, t).
    position : int or str
        Early position n (0-based index or name in ``cache.positions``).
    exit_type : int or str
        Exit type k_c (index or name in ``cache.exit_types``); must be available at ``position``.
    lam : float in [0, 1]
        lambda of Eq. 12.
    method : {"exact", "bounded"}
        See the module docstring. ``"exact"`` is the global minimum over the
        distinct confidences (as float64) of the samples reaching n, the
        largest such threshold on ties.
    costs : None, Costs or path
        Cost model (default: the cache's MACs).
    objective : {"paper", "normalized"} or Objective

    Returns
    -------
    t : float
        The threshold (NaN if no sample reaches ``position``).
    f : float
        f_{k, t, lambda, n}(k_c, t) (Eq. 13), +inf if no sample reaches ``position``.

    Raises
    ------
    ValueError
        Bad lambda, method, position or exit type, or an exit type not available there.
    ResultError
        If ``config`` does not fit the cache.
    """
    from .evaluation import as_config
    from .objective import check_lambda

    lam = check_lambda(lam)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    p = cache.position_index(position)
    k = cache.exit_type_index(exit_type)
    if not bool(np.asarray(cache.available)[p, k]):
        raise ValueError(f"exit type {cache.exit_types[k]!r} is not available at position {cache.positions[p]!r}")
    config = as_config(cache, config)
    prep = Prepared(cache, costs, objective)
    state = prep.state(config.exit_types, config.thresholds)
    cand = Candidate(prep, state, config.exit_types, p, lam)
    return cand.exact(k) if method == "exact" else cand.bounded(k)


__all__ = ["minimize_threshold", "METHODS", "Prepared", "Candidate"]
