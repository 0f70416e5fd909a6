"""Metrics of one exit configuration on a cache: Eq. 7-12 and per-sample replay.

:func:`evaluate` returns the aggregate metrics (E_n, EC_n, A_n, A, C, f);
:func:`simulate` replays Algorithm 1 sample by sample. Both run the kernels
in :mod:`dyce_search._kernels.metrics`.

Exit rule (:mod:`dyce_search.exit_rule`): a sample leaves at the first
enabled position n whose recorded float32 confidence c satisfies
``float64(c) >= t_n``, otherwise at the head (position P). The kernels apply
its float32 form, ``c >= float32_thresholds(t)``. Thresholds may be any
finite float: t_n > 1 disables the exit in effect, t_n <= 0 sends every
sample that reaches it out.

Cost of a sample leaving at position n: every segment up to n plus every
enabled exit at positions <= n, the one it leaves at included (Eq. 11); a
sample reaching the head pays all segments and all enabled exits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ._kernels.metrics import BLOCK, exit_counts, exit_counts_serial, exit_trace, exit_trace_serial
from .config import Config
from .costs import Costs
from .errors import CacheError, ResultError
from .exit_rule import float32_thresholds
from .objective import Objective, check_lambda, reference


def _renamed(old: str, new: str) -> None:
    warnings.warn(f"Evaluation.{old} is renamed {new} (costs need not be MACs); {old} will be removed",
                  DeprecationWarning, stacklevel=3)


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Metrics of one configuration G = {k, t} on one cache (Eq. 7-12).

    Index n = 0..P of the per-position arrays runs over the P early positions
    and then the head (last).

    Attributes
    ----------
    rel_accuracy : float
        A (Eq. 10), n_correct / (M A_ori); NaN if A_ori = 0. May exceed 1
        when early exits are right where the head is wrong.
    rel_cost : float
        C (Eq. 11), mean per-sample cost over the original model's cost,
        both in ``unit``.
    accuracy : float
        Absolute accuracy n_correct / M (agreement with the head if labels
        are unknown, see ``labels_known``).
    cost : float
        Mean cost per sample in ``unit`` (MACs unless a profile was given).
        Also available as ``mean_cost``. (``macs`` and ``rel_macs``, the
        names from when every cost was in MACs, still work and warn.)
    exits : int64 [P + 1]
        E_n (Eq. 7): samples leaving at each position, head last.
    exits_correct : int64 [P + 1]
        EC_n (Eq. 8): of those, the correctly classified ones.
    position_accuracy : float64 [P + 1]
        A_n (Eq. 9) = EC_n / E_n; NaN where E_n = 0.
    n_correct : int
        sum_n EC_n.
    cost_sum : float
        Sum over samples of each sample's cost, in ``unit``.
    objective : float or None
        f(k, t, lambda) (Eq. 12, on ``objective_kind``'s scale) if ``lam`` was given.
    lam : float or None
    objective_kind : str
        ``"paper"`` or ``"normalized"``.
    n_samples : int
        M.
    labels_known : bool
    unit : str
        Cost unit of ``cost`` and ``cost_sum`` (:mod:`dyce_search.units`).
    conservative_rel_accuracy : float or None
        With ``conservative=alpha``: A with every group's accuracy at its
        Beta lower bound (:mod:`dyce_search.conservative`); f then uses it.
    """

    rel_accuracy: float
    rel_cost: float
    accuracy: float
    cost: float
    exits: np.ndarray
    exits_correct: np.ndarray
    position_accuracy: np.ndarray
    n_correct: int
    cost_sum: float
    objective: float | None
    lam: float | None
    objective_kind: str
    n_samples: int
    labels_known: bool
    unit: str
    conservative_rel_accuracy: float | None = None

    @property
    def mean_cost(self) -> float:
        """Alias of ``cost``: mean cost per sample in ``unit``."""
        return self.cost

    @property
    def rel_macs(self) -> float:
        """Deprecated name of ``rel_cost`` (C, Eq. 11), which is in ``unit``, not always MACs."""
        _renamed("rel_macs", "rel_cost")
        return self.rel_cost

    @property
    def macs(self) -> float:
        """Deprecated name of ``cost``, which is in ``unit``, not always MACs."""
        _renamed("macs", "cost")
        return self.cost

    def to_dict(self) -> dict:
        """Scalar metrics as plain Python values (per-position arrays as lists), named as in result tables."""
        return {
            "rel_cost": self.rel_cost,
            "rel_accuracy": self.rel_accuracy,
            "accuracy": self.accuracy,
            "cost": self.cost,
            "unit": self.unit,
            "f": self.objective,
            "n_correct": self.n_correct,
            "exits": [int(v) for v in self.exits],
            "exits_correct": [int(v) for v in self.exits_correct],
        }


@dataclass(frozen=True, eq=False)
class Simulation:
    """Per-sample replay of Algorithm 1 under one configuration.

    Attributes
    ----------
    position : int32 [M]
        Position each sample leaves at (0..P-1 early, P = the head).
    pred : int32 [M]
        The prediction returned for each sample.
    correct : bool [M]
        Whether ``pred`` equals the label (the head's prediction if labels
        are unknown).
    cost : float64 [M]
        Cost of each sample in ``unit`` (segments up to its exit plus every
        enabled exit it ran).
    unit : str
    labels_known : bool
    """

    position: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    cost: np.ndarray
    unit: str
    labels_known: bool


# ----------------------------------------------------------------- boundary


def as_config(cache, config) -> Config:
    """Check a configuration against ``cache`` and return it as a :class:`Config`.

    Parameters
    ----------
    cache : ExitCache
    config : Config or (exit_types, thresholds)
        exit_types int [P] (-1 = none), thresholds float [P] (ignored where none).

    Raises
    ------
    ResultError
        If the length is not P, or at an enabled position the exit type index
        is >= K, the exit is not available in the cache, or the threshold is
        not finite; the message names the position.
    """
    if not isinstance(config, Config):
        try:
            exit_types, thresholds = config
        except (TypeError, ValueError):
            raise ResultError(
                f"a configuration must be a Config or an (exit_types, thresholds) pair, got {type(config).__name__}"
            ) from None
        try:
            config = Config(exit_types, thresholds)
        except ValueError as e:
            raise ResultError(f"invalid configuration: {e}") from None
    P, K = cache.n_positions, cache.n_types
    if config.n_positions != P:
        raise ResultError(f"configuration has {config.n_positions} positions, the cache has {P}")
    available = np.asarray(cache.available, bool)
    for p in np.flatnonzero(config.enabled):
        k = int(config.exit_types[p])
        where = f"position {p} ({cache.positions[p]!r})"
        if k >= K:
            raise ResultError(f"exit type index {k} at {where} is out of range (the cache has {K} exit types)")
        if not available[p, k]:
            raise ResultError(f"exit type {cache.exit_types[k]!r} is not available at {where}")
        if not np.isfinite(config.thresholds[p]):
            raise ResultError(f"threshold at {where} must be finite, got {config.thresholds[p]!r}")
    return config


def _checked(array, name, dtype, shape):
    a = np.asarray(array)
    if a.dtype != dtype:
        raise CacheError(f"cache.{name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if a.shape != shape:
        raise CacheError(f"cache.{name} must have shape {shape}, got {a.shape}")
    # no copy for the contiguous arrays an ExitCache holds
    return np.ascontiguousarray(a)


class _Prepared:
    """Kernel inputs for one (cache, config, costs): arrays as they are, plus index arrays.

    With a :class:`~dyce_search.problem.Problem` of the same cache, its
    reference labels and checked costs are reused instead of recomputed.
    """

    def __init__(self, cache, config, costs, problem=None):
        config = as_config(cache, config)
        P, K, M = cache.n_positions, cache.n_types, cache.n_samples
        if M < 1:
            raise CacheError("the cache holds no samples")
        self.conf = _checked(cache.conf, "conf", np.float32, (P, K, M))
        self.pred = _checked(cache.pred, "pred", np.int32, (P, K, M))
        self.final_pred = _checked(cache.final_pred, "final_pred", np.int32, (M,))
        if problem is not None and problem.cache is cache and (costs is None or costs is problem.costs):
            self.reference = problem.reference
            costs = problem.costs
        else:
            self.reference = reference(cache)
            if costs is None:
                costs = Costs.from_cache(cache)
            elif not isinstance(costs, Costs):
                raise TypeError(f"costs must be a dyce_search.Costs or None, got {type(costs).__name__}")
            else:
                costs.check(cache)
        self.truth = self.reference.truth
        self.labels_known = self.reference.labels_known
        self.costs = costs
        self.config = config
        self.positions = np.flatnonzero(config.enabled).astype(np.int64)
        self.types = config.exit_types[self.positions].astype(np.int64)
        self.thresholds = float32_thresholds(config.thresholds[self.positions])
        self.slot_cost = slot_costs(costs, self.positions, self.types)


#: Below this many (sample, enabled exit) visits one thread does the work: waking the
#: thread pool costs tens of microseconds on an idle machine and milliseconds
#: on a busy one, more than ~0.1 ms of serial work.
SERIAL_WORK = 1 << 18


def _small(n_samples: int, n_enabled: int) -> bool:
    return n_samples <= BLOCK or n_samples * max(n_enabled, 1) < SERIAL_WORK


def slot_costs(costs: Costs, positions: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Cost (in ``costs.unit``) of a sample that leaves at each enabled exit, head last.

    Parameters
    ----------
    costs : Costs
    positions, types : int64 [E]
        The enabled exits (p, k) in increasing position order.

    Returns
    -------
    float64 [E + 1]
        ``sum(segment[:p_j + 1]) + sum(exit[p_i, k_i] for i <= j)``; the last
        entry is ``segment.sum()`` plus every enabled exit's cost.
    """
    cum_segment = np.cumsum(costs.segment)
    cum_exit = np.cumsum(costs.exit_costs()[positions, types]) if positions.size else np.zeros(0)
    out = np.empty(positions.size + 1, np.float64)
    out[:-1] = cum_segment[positions] + cum_exit
    out[-1] = cum_segment[-1] + (cum_exit[-1] if positions.size else 0.0)
    return out


# ------------------------------------------------------------------ public


def evaluate(cache, config, costs: Costs | None = None, objective="paper", lam=None, problem=None,
             conservative=None) -> Evaluation:
    """Metrics of configuration G = {k, t} on ``cache`` (Eq. 7-12).

    Parameters
    ----------
    cache : ExitCache
    config : Config or (exit_types, thresholds)
        See :func:`as_config`.
    costs : Costs, optional
        Per-segment / per-exit costs (S_n, Delta_{n,k} before normalisation);
        default: the cache's MACs (:meth:`Costs.from_cache`).
    objective : {"paper", "normalized"} or Objective
        Scale of f (Eq. 12), see :class:`~dyce_search.objective.Objective`.
    lam : float in [0, 1], optional
        If given, ``Evaluation.objective`` holds f(k, t, lam).
    problem : Problem, optional
        The prepared :class:`~dyce_search.problem.Problem` of ``cache`` (its
        reference labels and costs are reused; searches pass it).
    conservative : float in (0, 1), optional
        Also the released code's conservative accuracy (every exit group's
        accuracy at its Beta lower bound, :mod:`dyce_search.conservative`),
        which f then uses.

    Returns
    -------
    Evaluation

    Raises
    ------
    ResultError
        If the configuration does not fit the cache (message names the position).
    CostError
        If ``costs`` does not fit the cache.
    ValueError
        If ``lam`` is NaN or outside [0, 1], or ``lam`` is given and f is
        undefined on this cache (the head is never correct; for
        ``"normalized"`` also a_min >= A_ori). Without ``lam`` such a cache
        still gets every metric, with ``rel_accuracy`` NaN if A_ori = 0.
    """
    if lam is not None:
        lam = check_lambda(lam)
    prep = _Prepared(cache, config, costs, problem)
    obj = Objective.build(objective, cache, prep.costs, prep.reference)
    if obj.n_samples != cache.n_samples or obj.total_cost != prep.costs.total:
        raise ValueError(
            f"the objective was built for {obj.n_samples} samples and total cost {obj.total_cost:g}, "
            f"this cache has {cache.n_samples} samples and the costs total {prep.costs.total:g}"
        )
    kernel = exit_counts_serial if _small(cache.n_samples, prep.positions.size) else exit_counts
    counts, correct = kernel(prep.conf, prep.pred, prep.final_pred, prep.truth, prep.positions, prep.types, prep.thresholds)
    P = cache.n_positions
    exits = np.zeros(P + 1, np.int64)
    exits_correct = np.zeros(P + 1, np.int64)
    exits[prep.positions] = counts[:-1]
    exits[P] = counts[-1]
    exits_correct[prep.positions] = correct[:-1]
    exits_correct[P] = correct[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        position_accuracy = np.where(exits > 0, exits_correct / np.maximum(exits, 1), np.nan)
    n_correct = int(correct.sum())
    # Eq. 11 as written: sum_n E_n * (cost of leaving at n), summed in slot order.
    cost_sum = float(np.dot(counts.astype(np.float64), prep.slot_cost))
    M = cache.n_samples
    counted = n_correct
    conservative_rel = None
    if conservative is not None:
        from .conservative import check_alpha, conservative_correct

        counted = conservative_correct(exits, exits_correct, check_alpha(conservative))
        conservative_rel = obj.rel_accuracy(counted)
    return Evaluation(
        rel_accuracy=obj.rel_accuracy(n_correct),
        rel_cost=obj.rel_cost(cost_sum),
        accuracy=n_correct / M,
        cost=cost_sum / M,
        exits=exits,
        exits_correct=exits_correct,
        position_accuracy=position_accuracy,
        n_correct=n_correct,
        cost_sum=cost_sum,
        objective=None if lam is None else obj.value(lam, counted, cost_sum),
        lam=lam,
        objective_kind=obj.kind,
        n_samples=M,
        labels_known=prep.labels_known,
        unit=prep.costs.unit,
        conservative_rel_accuracy=conservative_rel,
    )


def simulate(cache, config, costs: Costs | None = None) -> Simulation:
    """Replay Algorithm 1 on every cached sample under configuration G = {k, t}.

    Parameters
    ----------
    cache : ExitCache
    config : Config or (exit_types, thresholds)
    costs : Costs, optional
        Default: the cache's MACs.

    Returns
    -------
    Simulation
        Per-sample exit position (P = head), prediction, correctness and cost.

    Raises
    ------
    ResultError, CostError
        As :func:`evaluate`.
    """
    prep = _Prepared(cache, config, costs)
    kernel = exit_trace_serial if _small(cache.n_samples, prep.positions.size) else exit_trace
    slot, pred, correct, cost = kernel(
        prep.conf,
        prep.pred,
        prep.final_pred,
        prep.truth,
        prep.positions,
        prep.types,
        prep.thresholds,
        prep.slot_cost,
    )
    slot_position = np.append(prep.positions, cache.n_positions).astype(np.int32)
    return Simulation(
        position=slot_position[slot],
        pred=pred,
        correct=correct,
        cost=cost,
        unit=prep.costs.unit,
        labels_known=prep.labels_known,
    )
