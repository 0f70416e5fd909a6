"""One search problem, prepared once: the cache's arrays, reference labels, A_ori, costs and objective.

Searches, threshold minimisation, evaluation and search results all take
their inputs from a :class:`Problem`, so the reference labels, A_ori (Eq. 10),
the cost model (Eq. 11) and the objective coefficients (Eq. 12) are
computed in one place and can never disagree between them.
"""

from __future__ import annotations

import math

import numpy as np

from .costs import Costs
from .errors import CacheError
from .objective import Objective, reference

#: Largest total (M samples x the most a sample can cost) in quantised units;
#: below 2**53 every count-weighted cost sum is an exact float64 integer.
_QUANTUM_BUDGET = 2.0**53

#: Relative slack when a budget target is turned into an integer count, so
#: that e.g. a drop of exactly 0.5 % on 400 correct head predictions (398.0,
#: computed as 397.99999999999994) is not lost to rounding.
TARGET_TOLERANCE = 1e-12


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


class Problem:
    """A cache, its cost model and an objective scale, prepared for the kernels.

    Costs are quantised to integers: ``seg_q = rint(segment * scale)``,
    ``exit_q = rint(exit * scale)`` with ``scale`` the largest power of two
    for which M times the most expensive sample (every segment and, at each
    position, its dearest exit) stays below 2**53. Every ``cost_sum`` is then
    an exact integer whatever the summation order. MAC counts are integers
    and stay exact (scale >= 1 unless M x MACs exceed 2**53); other units are
    rounded to 2**-53 of that total.

    Parameters
    ----------
    cache : ExitCache
    costs : None, Costs or path
        S_n and Delta_{n,k} before normalisation (default: the cache's MACs).
    objective : {"paper", "normalized"} or Objective
        Scale of f (Eq. 12).

    Attributes
    ----------
    cache : ExitCache
    conf : float32 [P, K, M]
    pred : int32 [P, K, M]
    available : bool [P, K]
    truth : int32 [M]
        Labels, or the head's predictions when any label is unknown.
    labels_known : bool
    final_correct : int8 [M]
    n_head_correct : int
        M A_ori.
    head_accuracy : float
        A_ori (Eq. 10).
    costs : Costs
    objective : Objective
    seg_q : int64 [P + 1]
    exit_q : int64 [P, K]
    scale : float
        Quantised units per cost unit.
    """

    def __init__(self, cache, costs=None, objective="paper"):
        P, K, M = cache.n_positions, cache.n_types, cache.n_samples
        self.cache = cache
        self.conf = _contiguous(cache.conf, np.float32, (P, K, M), "conf")
        self.pred = _contiguous(cache.pred, np.int32, (P, K, M), "pred")
        self.available = _contiguous(cache.available, np.bool_, (P, K), "available")
        ref = reference(cache)
        self.reference = ref
        self.truth = ref.truth
        self.labels_known = ref.labels_known
        self.final_correct = ref.head_correct
        self.n_head_correct = ref.n_head_correct
        self.head_accuracy = ref.head_accuracy
        self.costs = as_costs(cache, costs)
        self.objective = Objective.build(objective, cache, self.costs, ref)
        segment = self.costs.segment
        exit_cost = np.where(self.available, self.costs.exit_costs(), 0.0)
        most = float(segment.sum() + exit_cost.max(axis=1).sum()) if P else float(segment.sum())
        self.scale = 2.0 ** math.floor(math.log2(_QUANTUM_BUDGET / (max(M, 1) * most)))
        self.seg_q = np.rint(segment * self.scale).astype(np.int64)
        self.exit_q = np.rint(exit_cost * self.scale).astype(np.int64)

    # ----------------------------------------------------------------- shape

    @property
    def shape(self) -> tuple[int, int, int]:
        """(P, K, M)."""
        return self.conf.shape

    def check_searchable(self) -> None:
        """Raise :class:`CacheError` if the cache exceeds what the search kernels index."""
        P, _, M = self.shape
        if M >= 1 << 29:
            raise CacheError(f"searches support fewer than {1 << 29} samples, the cache has {M}")
        if P >= 1 << 14:
            raise CacheError(f"searches support fewer than {1 << 14} positions, the cache has {P}")

    # ------------------------------------------------------------- objective

    def coefficients(self, lam) -> tuple[float, float, float]:
        """(a0, a_correct, a_cost per quantised unit) of f at ``lam``."""
        a0, a_correct, a_cost = self.objective.coefficients(lam)
        return float(a0), float(a_correct), float(a_cost) / self.scale

    def coefficient_table(self, lambdas) -> np.ndarray:
        """float64 [L, 3]: :meth:`coefficients` per lambda."""
        return np.array([self.coefficients(lam) for lam in lambdas], np.float64).reshape(len(lambdas), 3)

    # --------------------------------------------------------------- targets

    def min_correct(self, max_drop: float) -> int:
        """Fewest correct predictions with an accuracy drop 1 - A (Eq. 10) of at most ``max_drop``."""
        need = self.n_head_correct * (1.0 - float(max_drop))
        return int(math.ceil(need - TARGET_TOLERANCE * max(1.0, need)))

    def max_cost_sum(self, max_cost: float) -> int:
        """Largest quantised cost sum with a relative cost C (Eq. 11) of at most ``max_cost``."""
        M = self.shape[2]
        budget = float(max_cost) * M * float(self.seg_q.sum())
        return int(math.floor(budget + TARGET_TOLERANCE * max(1.0, budget)))

    # ----------------------------------------------------------------- state

    def state(self, k_cfg, t_cfg):
        """``config_state`` of a configuration given as int64 / float64 [P] arrays."""
        from ._kernels.state import config_state

        return config_state(self.conf, self.pred, self.truth, self.final_correct,
                            np.ascontiguousarray(k_cfg, np.int64), np.ascontiguousarray(t_cfg, np.float64),
                            self.seg_q, self.exit_q)

    def counts(self, configs) -> tuple[np.ndarray, np.ndarray]:
        """int64 [N] ``n_correct`` and quantised ``cost_sum`` of N configurations."""
        from ._kernels.descent import counts_of_all

        P = self.shape[0]
        configs = list(configs)
        k = np.array([c.exit_types for c in configs], np.int64).reshape(len(configs), P)
        t = np.array([c.thresholds for c in configs], np.float64).reshape(len(configs), P)
        return counts_of_all(self.conf, self.pred, self.truth, self.final_correct, self.seg_q, self.exit_q, k, t)

    def value(self, lam, n_correct, cost_sum) -> float:
        """f at ``lam`` from exact counts (the kernels' float expression)."""
        a0, a_correct, a_cost_q = self.coefficients(lam)
        return a0 + a_correct * float(n_correct) + a_cost_q * float(cost_sum)

    # ------------------------------------------------------------ evaluation

    def evaluate(self, config, lam=None, conservative=None):
        """:func:`dyce_search.evaluation.evaluate` of ``config`` on this problem."""
        from .evaluation import evaluate

        return evaluate(self.cache, config, self.costs, objective=self.objective, lam=lam, problem=self,
                        conservative=conservative)


__all__ = ["Problem", "as_costs", "TARGET_TOLERANCE"]
