"""Minimising Eq. 13 over the threshold t of one exit (n, k) with the rest of G fixed.

Two methods:

``"exact"`` (default)
    f(t) is a step function of t: it only changes when t passes the
    confidence of a sample that reaches n. Its global minimum over every
    distinct confidence of those samples is found in one pass over the
    samples sorted by decreasing confidence, with prefix sums of each sample's
    change to ``n_correct`` and ``cost_sum``. Ties exit together (a sample
    leaves when conf >= t); among equal minima the largest threshold wins.
    The returned t lies strictly inside the winning gap: halfway between the
    lowest confidence that leaves and the next lower confidence of a sample
    reaching n (0 if none), never on a recorded value, so confidences
    recomputed a few ulps differently at run time still exit where the
    search assumed.
``"bounded"``
    The paper's ``scipy.optimize.minimize_scalar(method="bounded",
    bounds=(0, 1))`` on the same objective, reproduced step for step in a
    numba kernel (same iterates, same t and f as scipy). It evaluates f at
    arbitrary t and can stop at a non-optimal step; it is never better than
    ``"exact"`` except where t lies above every confidence (nobody leaves at
    n but the exit is still paid for), which the searches cover with the
    k_c = none option.

Objective values are computed from exact integer counts (see
:class:`~dyce_search.problem.Problem`), so both methods, the searches and the
brute-force references compare bit-identical numbers.
"""

from __future__ import annotations

import math

import numpy as np

from ._kernels.search import column_keys
from ._kernels.state import pack_continuation, saved_costs
from ._kernels.thresholds import bounded_minimum, objective_value, place_threshold, scan_thresholds
from ._kernels.thresholds import value_at_threshold
from .problem import Problem

METHODS = ("exact", "bounded")


class Candidate:
    """Eq. 13 at one position of a fixed configuration, for any exit type and threshold.

    Built once per (configuration, position); :meth:`exact` and :meth:`bounded`
    minimise over t for one exit type, :meth:`value` evaluates one t.
    """

    def __init__(self, problem: Problem, state, k_cfg, p: int, lam: float):
        self.problem = problem
        self.p = p
        e, e2, c1, c2, cum, _, _ = state
        self.code = np.empty(e.shape[0], np.int16)
        self.n_reach, self.n_correct0, self.cost_sum0 = pack_continuation(
            p, e, e2, c1, c2, cum, int(k_cfg[p]), problem.exit_q, self.code
        )
        self.saved = saved_costs(cum, p)
        self.coefs = problem.coefficients(lam)

    def disabled(self) -> float:
        """f with position p disabled (k_c = none)."""
        return objective_value(*self.coefs, self.n_correct0, self.cost_sum0)

    def _cost_base(self, k):
        return self.cost_sum0 + self.n_reach * self.problem.exit_q[self.p, k]

    def value(self, k: int, t: float) -> float:
        """f with exit type k and threshold t at p."""
        prob = self.problem
        n_correct, cost_sum = value_at_threshold(
            prob.conf[self.p, k], prob.pred[self.p, k], prob.truth, float(t),
            self.code, self.saved, self.n_correct0, self._cost_base(k),
        )
        return objective_value(*self.coefs, n_correct, cost_sum)

    def _column(self, k):
        prob = self.problem
        keys = np.empty(self.code.shape[0], np.int32)
        n_valid = column_keys(prob.conf[self.p, k], prob.pred[self.p, k], prob.truth, keys)
        return keys, n_valid

    def exact(self, k: int) -> tuple[float, float]:
        """(t, f): global minimum over the distinct confidences of the samples reaching p.

        Returns (nan, inf) when no sample reaches p.
        """
        if self.n_reach == 0:
            return math.nan, math.inf
        keys, n_valid = self._column(k)
        f, i = scan_thresholds(keys, n_valid, self.code, self.saved, self.n_reach, self.n_correct0,
                               self._cost_base(k), *self.coefs)
        if i < 0:
            return math.nan, math.inf
        sentinel = 2 * (self.problem.shape[0] + 1)
        t = place_threshold(keys, n_valid, self.code, i, self.problem.conf[self.p, k], sentinel)
        return float(t), float(f)

    def bounded(self, k: int) -> tuple[float, float]:
        """(t, f) of scipy's ``minimize_scalar(method="bounded", bounds=(0, 1))`` (the paper's), exactly."""
        if self.n_reach == 0:
            return math.nan, math.inf
        keys, n_valid = self._column(k)
        M = self.code.shape[0]
        t, f, _ = bounded_minimum(keys, n_valid, self.code, self.saved, self.problem.conf[self.p, k], self.n_reach,
                                  self.n_correct0, self._cost_base(k), *self.coefs,
                                  np.empty(M + 1, np.int64), np.empty(M + 1, np.int64))
        return float(t), float(f)


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
        largest such gap on ties, with t placed inside the gap.
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
    problem = Problem(cache, costs, objective)
    problem.check_searchable()
    state = problem.state(config.exit_types, config.thresholds)
    cand = Candidate(problem, state, config.exit_types, p, lam)
    return cand.exact(k) if method == "exact" else cand.bounded(k)


__all__ = ["minimize_threshold", "METHODS", "Candidate"]
