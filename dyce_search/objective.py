"""The search target f(k, t, lambda) of Eq. 12 as an affine function of two sums.

For a configuration let ``n_correct`` be the number of correct predictions
(sum over n of EC_n, Eq. 8) and ``cost_sum`` the sum over samples of each
sample's cost in the unit of :class:`~dyce_search.costs.Costs` (Eq. 11 before
the 1/M and the normalisation). Both supported objectives are affine in these
two sums::

    f = a0 + a_correct * n_correct + a_cost * cost_sum

which is all a search kernel needs (:meth:`Objective.coefficients`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("paper", "normalized")


@dataclass(frozen=True, eq=False)
class Reference:
    """What every prediction is compared with, and how good the original head is (A_ori).

    The one definition of A_ori in the package: searches, evaluations,
    results and figures all take it from :func:`reference`.

    Attributes
    ----------
    truth : int32 [M]
        The cache's labels if every label is known, else the head's own
        predictions (accuracy then means agreement with the head).
    labels_known : bool
        Whether ``truth`` holds ground-truth labels.
    head_correct : int8 [M]
        Whether the head's prediction equals ``truth``.
    n_head_correct : int
        sum of ``head_correct``: M A_ori.
    """

    truth: np.ndarray
    labels_known: bool
    head_correct: np.ndarray
    n_head_correct: int

    @property
    def n_samples(self) -> int:
        return int(self.truth.shape[0])

    @property
    def head_accuracy(self) -> float:
        """A_ori of Eq. 10 (1.0 when labels are unknown; NaN for an empty cache)."""
        return self.n_head_correct / self.n_samples if self.n_samples else float("nan")


def reference(cache) -> Reference:
    """The :class:`Reference` of a cache (V_n of Eq. 6 and A_ori of Eq. 10).

    If any label is -1 (unknown), every accuracy is agreement with the head:
    a partly labelled cache is treated like an unlabelled one, so that A and
    A_ori always count the same samples.
    """
    label = np.asarray(cache.label)
    final = np.asarray(cache.final_pred)
    labels_known = not (label.size and (label < 0).any())
    truth = np.ascontiguousarray(label if labels_known else final, dtype=np.int32)
    head_correct = (final == truth).astype(np.int8)
    return Reference(truth, labels_known, head_correct, int(np.count_nonzero(head_correct)))


def reference_labels(cache) -> tuple[np.ndarray, bool]:
    """``(truth, labels_known)`` of :func:`reference`."""
    ref = reference(cache)
    return ref.truth, ref.labels_known


def head_accuracy(cache) -> float:
    """A_ori (Eq. 10) as every search, evaluation and figure uses it; see :func:`reference`."""
    return reference(cache).head_accuracy


def check_lambda(lam) -> float:
    """Return ``lam`` as a float in [0, 1]; ``ValueError`` for NaN or out of range."""
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lambda must be a number in [0, 1], got {lam!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"lambda must be in [0, 1], got {lam!r}")
    return value


@dataclass(frozen=True)
class Objective:
    """f(k, t, lambda) of Eq. 12 on one cache and cost model.

    Attributes
    ----------
    kind : {"paper", "normalized"}
        ``"paper"``: f = lambda (1 - A) + (1 - lambda) C with A of Eq. 10 and C
        of Eq. 11. ``"normalized"`` (the authors' released code):
        f = lambda (1 - acc') + (1 - lambda) C' with
        acc' = (A A_ori - a_min) / (A_ori - a_min) and
        C' = (C total - c_min) / (total - c_min).
    n_samples : int
        M.
    head_accuracy : float
        A_ori, the original model's accuracy on the cache (1 when labels are
        unknown: accuracy is then agreement with the head).
    total_cost : float
        Cost of the original model in cost units, ``Costs.segment.sum()``.
    min_accuracy : float
        a_min: standalone accuracy of the first available exit type at the
        first position that has one (``"normalized"`` only, else 0).
    min_cost : float
        c_min: backbone cost up to that position, ``segment[:p0 + 1].sum()``
        (``segment[0]`` in the usual case; ``"normalized"`` only, else 0).
    labels_known : bool
        False if accuracy means agreement with the head.
    """

    kind: str
    n_samples: int
    head_accuracy: float
    total_cost: float
    min_accuracy: float = 0.0
    min_cost: float = 0.0
    labels_known: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"objective must be one of {KINDS}, got {self.kind!r}")
        if self.n_samples < 1:
            raise ValueError("the objective needs at least one sample")
        if not self.total_cost > 0:
            raise ValueError(f"the original model's cost must be > 0, got {self.total_cost}")

    def check_defined(self) -> None:
        """Raise ``ValueError`` if f cannot be computed on this cache.

        The paper scale needs A_ori > 0; the normalised scale also needs
        a_min < A_ori and c_min < total. Metrics that do not need f (C,
        absolute accuracy) stay available either way.
        """
        if not self.head_accuracy > 0:
            raise ValueError(
                "the original model's accuracy A_ori is 0 on this cache; relative accuracy (Eq. 10) "
                "and the objective are undefined"
            )
        if self.kind == "normalized":
            if np.isnan(self.min_accuracy):
                raise ValueError("normalized objective undefined: the cache has no available exit (for a_min)")
            if not self.head_accuracy > self.min_accuracy:
                raise ValueError(
                    "normalized objective undefined: the first exit's accuracy a_min = "
                    f"{self.min_accuracy:.6g} is not below the head's A_ori = {self.head_accuracy:.6g}"
                )
            if not self.total_cost > self.min_cost:
                raise ValueError(
                    f"normalized objective undefined: c_min = {self.min_cost:.6g} is not below the "
                    f"total cost {self.total_cost:.6g}"
                )

    # ---------------------------------------------------------- constructors

    @classmethod
    def paper(cls, cache, costs=None, ref: Reference | None = None) -> "Objective":
        """Eq. 12 with A of Eq. 10 and C of Eq. 11 (costs default to the cache's MACs).

        ``ref``: the cache's :func:`reference`, if already at hand.
        """
        ref = reference(cache) if ref is None else ref
        costs = _costs_for(cache, costs)
        return cls(
            kind="paper",
            n_samples=ref.n_samples,
            head_accuracy=ref.head_accuracy,
            total_cost=costs.total,
            labels_known=ref.labels_known,
        )

    @classmethod
    def normalized(cls, cache, costs=None, ref: Reference | None = None) -> "Objective":
        """The released code's min-max rescaled accuracy and cost (see class doc)."""
        ref = reference(cache) if ref is None else ref
        costs = _costs_for(cache, costs)
        available = np.asarray(cache.available, bool)
        rows = np.flatnonzero(available.any(axis=1))
        if rows.size == 0:  # no exit anywhere: a_min undefined, reported by check_defined()
            a_min, c_min = float("nan"), float("nan")
        else:
            p0 = int(rows[0])
            k0 = int(np.flatnonzero(available[p0])[0])
            a_min = float(np.count_nonzero(np.asarray(cache.pred)[p0, k0] == ref.truth)) / max(ref.n_samples, 1)
            c_min = float(costs.segment[: p0 + 1].sum())
        return cls(
            kind="normalized",
            n_samples=ref.n_samples,
            head_accuracy=ref.head_accuracy,
            total_cost=costs.total,
            min_accuracy=a_min,
            min_cost=c_min,
            labels_known=ref.labels_known,
        )

    @classmethod
    def build(cls, objective, cache, costs=None, ref: Reference | None = None) -> "Objective":
        """An :class:`Objective` from a kind name (``"paper"``/``"normalized"``) or pass one through."""
        if isinstance(objective, Objective):
            return objective
        if objective == "paper":
            return cls.paper(cache, costs, ref)
        if objective == "normalized":
            return cls.normalized(cache, costs, ref)
        raise ValueError(f"objective must be one of {KINDS} or an Objective, got {objective!r}")

    # --------------------------------------------------------------- algebra

    def coefficients(self, lam) -> tuple[float, float, float]:
        """(a0, a_correct, a_cost) with f = a0 + a_correct * n_correct + a_cost * cost_sum.

        Raises
        ------
        ValueError
            If ``lam`` is NaN or outside [0, 1], or f is undefined on this
            cache (see :meth:`check_defined`).
        """
        lam = check_lambda(lam)
        self.check_defined()
        M = float(self.n_samples)
        if self.kind == "paper":
            # lam (1 - n_correct / (M A_ori)) + (1 - lam) cost_sum / (M total)
            return lam, -lam / (M * self.head_accuracy), (1.0 - lam) / (M * self.total_cost)
        acc_span = self.head_accuracy - self.min_accuracy
        cost_span = self.total_cost - self.min_cost
        a0 = lam * self.head_accuracy / acc_span - (1.0 - lam) * self.min_cost / cost_span
        return a0, -lam / (M * acc_span), (1.0 - lam) / (M * cost_span)

    def value(self, lam, n_correct, cost_sum) -> float:
        """f(k, t, lambda) (Eq. 12 on this objective's scale) from the two sums."""
        a0, a_correct, a_cost = self.coefficients(lam)
        return a0 + a_correct * float(n_correct) + a_cost * float(cost_sum)

    def rel_accuracy(self, n_correct) -> float:
        """A (Eq. 10): n_correct / (M A_ori); NaN if A_ori = 0."""
        if not self.head_accuracy > 0:
            return float("nan")
        return float(n_correct) / (self.n_samples * self.head_accuracy)

    def rel_cost(self, cost_sum) -> float:
        """C (Eq. 11): cost_sum / (M total)."""
        return float(cost_sum) / (self.n_samples * self.total_cost)

    def accuracy(self, n_correct) -> float:
        """Absolute accuracy n_correct / M (agreement with the head if labels are unknown)."""
        return float(n_correct) / self.n_samples


def _costs_for(cache, costs):
    from .costs import Costs

    if costs is None:
        return Costs.from_cache(cache)
    if not isinstance(costs, Costs):
        raise TypeError(f"costs must be a dyce_search.Costs or None, got {type(costs).__name__}")
    return costs.check(cache)


__all__ = ["Objective", "KINDS", "Reference", "check_lambda", "head_accuracy", "reference", "reference_labels"]
