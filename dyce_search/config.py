"""An exit configuration G = {k, t} (paper Sec. III-A.4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Config:
    """One exit configuration G = {k, t} over the P early positions.

    Attributes
    ----------
    exit_types : int64 [P]
        k: index into ``ExitCache.exit_types`` of the exit enabled at each early
        position, or -1 for none (the paper's k_n = 0). The head (position P) is
        always enabled with threshold 0 and is not stored.
    thresholds : float64 [P]
        t: a sample leaves at the first enabled position whose confidence is
        >= t_n. NaN where the position is disabled.
    """

    exit_types: np.ndarray
    thresholds: np.ndarray

    def __post_init__(self):
        k = np.ascontiguousarray(self.exit_types, dtype=np.int64)
        t = np.ascontiguousarray(self.thresholds, dtype=np.float64)
        if k.ndim != 1 or t.shape != k.shape:
            raise ValueError(
                f"exit_types and thresholds must be 1-D of equal length, got shapes {k.shape} and {t.shape}"
            )
        if np.any(k < -1):
            raise ValueError(f"exit_types must be >= -1 (-1 = no exit), got {k.min()}")
        t = np.where(k < 0, np.nan, t)
        if np.any(np.isnan(t[k >= 0])):
            raise ValueError("every enabled position needs a threshold, got NaN")
        object.__setattr__(self, "exit_types", k)
        object.__setattr__(self, "thresholds", t)

    @classmethod
    def empty(cls, n_positions: int) -> "Config":
        """The configuration with every early exit disabled (the original model)."""
        return cls(np.full(n_positions, -1, np.int64), np.full(n_positions, np.nan))

    @property
    def n_positions(self) -> int:
        return int(self.exit_types.shape[0])

    @property
    def enabled(self) -> np.ndarray:
        """bool [P]: positions with an exit enabled."""
        return self.exit_types >= 0

    def to_dict(self) -> dict:
        """JSON-ready form: thresholds of disabled positions become None."""
        return {
            "exit_types": [int(k) for k in self.exit_types],
            "thresholds": [None if k < 0 else float(t) for k, t in zip(self.exit_types, self.thresholds)],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        k = np.asarray(d["exit_types"], dtype=np.int64)
        t = np.array([np.nan if v is None else float(v) for v in d["thresholds"]], dtype=np.float64)
        return cls(k, t)

    def __eq__(self, other):
        if not isinstance(other, Config):
            return NotImplemented
        return bool(
            np.array_equal(self.exit_types, other.exit_types)
            and np.array_equal(self.thresholds, other.thresholds, equal_nan=True)
        )

    def __repr__(self):
        on = np.flatnonzero(self.enabled)
        parts = ", ".join(f"{p}:{self.exit_types[p]}@{self.thresholds[p]:.4g}" for p in on)
        return f"Config({{{parts}}} of {self.n_positions} positions)"
