"""Cost model of a segmented backbone with exits: S_n and Delta_{n,k} of Eq. 11.

A :class:`Costs` holds the cost of every backbone segment alone and of every
exit, in one unit (MACs from the cache, or a measured latency profile in ms).
Searches and metrics use only these two arrays, so any additive per-segment /
per-exit cost plugs in exactly like MACs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from ._io import check_header, write_text_atomic
from .errors import CostError
from .provenance import OVERRIDE_HINT, Origin, check_combinable, check_record

FORMAT = "dyce-costs"
VERSION = 1


@dataclass(frozen=True, eq=False)
class Costs:
    """Per-segment and per-exit costs of one backbone.

    Shapes use P = number of early exit positions and K = number of exit types.

    Attributes
    ----------
    segment : float64 [P + 1]
        Cost of segment n alone (n = 0..P). ``segment[P]`` runs from the last
        early position to the output, the original head included, so
        ``segment.sum()`` is the cost of the original model.
    exit : float64 [P, K]
        Cost of exit (p, k); NaN where the profile has no such exit.
    unit : str
        Unit of both arrays, e.g. ``"macs"`` or ``"ms"``.
    positions, exit_types : tuple[str, ...] or None
        Names of the positions / exit types the profile was made for; checked
        against a cache by :meth:`check` when present.
    backbone : str or None
        Name of the backbone; checked against a cache's by :meth:`check`.
    provenance : dict or None
        The provenance record of what the profile was made for (the cache it
        was derived from, or the run a latency profile was measured on; see
        :mod:`dyce_search.provenance`); checked against a cache's by
        :meth:`check`.

    Raises
    ------
    CostError
        On wrong dimensions, negative, infinite or NaN segment costs, a zero
        total, negative or infinite exit costs, or name lists of the wrong length.
    """

    segment: np.ndarray
    exit: np.ndarray
    unit: str = "macs"
    positions: tuple | None = None
    exit_types: tuple | None = None
    backbone: str | None = None
    provenance: dict | None = None

    def __post_init__(self):
        seg = np.array(self.segment, dtype=np.float64, copy=True)
        ex = np.array(self.exit, dtype=np.float64, copy=True)
        if seg.ndim != 1 or seg.shape[0] < 1:
            raise CostError(f"segment costs must be a non-empty 1-D array [P+1], got shape {seg.shape}")
        n_pos = seg.shape[0] - 1
        if ex.ndim != 2 or ex.shape[0] != n_pos:
            raise CostError(f"exit costs must have shape [P={n_pos}, K] to match {n_pos + 1} segments, got {ex.shape}")
        bad = ~np.isfinite(seg) | (seg < 0)
        if bad.any():
            n = int(np.flatnonzero(bad)[0])
            raise CostError(f"segment cost {n} must be finite and >= 0, got {seg[n]!r}")
        if not seg.sum() > 0:
            raise CostError("the segment costs sum to 0; the original model must have a positive cost")
        bad = np.isinf(ex) | (ex < 0)
        if bad.any():
            p, k = (int(i) for i in np.argwhere(bad)[0])
            raise CostError(f"exit cost at position {p}, exit type {k} must be >= 0 and finite, got {ex[p, k]!r}")
        if not isinstance(self.unit, str) or not self.unit:
            raise CostError(f"unit must be a non-empty string, got {self.unit!r}")
        positions = None if self.positions is None else tuple(str(s) for s in self.positions)
        exit_types = None if self.exit_types is None else tuple(str(s) for s in self.exit_types)
        if positions is not None and len(positions) != n_pos:
            raise CostError(f"{len(positions)} position names for {n_pos} positions")
        if exit_types is not None and len(exit_types) != ex.shape[1]:
            raise CostError(f"{len(exit_types)} exit type names for {ex.shape[1]} exit types")
        seg.flags.writeable = False
        ex.flags.writeable = False
        object.__setattr__(self, "segment", seg)
        object.__setattr__(self, "exit", ex)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "exit_types", exit_types)
        object.__setattr__(self, "provenance", check_record(self.provenance, "costs", CostError))

    @property
    def n_positions(self) -> int:
        """P, the number of early positions."""
        return int(self.exit.shape[0])

    @property
    def n_types(self) -> int:
        """K, the number of exit types."""
        return int(self.exit.shape[1])

    @property
    def total(self) -> float:
        """Cost of the original model, ``segment.sum()``."""
        return float(self.segment.sum())

    # ------------------------------------------------------------------ build

    @classmethod
    def from_cache(cls, cache) -> "Costs":
        """MACs of the cache's backbone segments and exits.

        ``segment = diff([0, *backbone_macs, total_macs])`` and
        ``exit = exit_macs`` (NaN where the exit is not available).

        Raises
        ------
        CostError
            If the cumulative backbone MACs decrease or exceed ``total_macs``.
        """
        cumulative = np.concatenate([[0], np.asarray(cache.backbone_macs, np.int64), [int(cache.total_macs)]])
        segment = np.diff(cumulative)
        if (segment < 0).any():
            n = int(np.flatnonzero(segment < 0)[0])
            raise CostError(
                f"cache MACs are not increasing: cumulative MACs {cumulative[n]} then {cumulative[n + 1]} at segment {n}"
            )
        exit_ = np.where(np.asarray(cache.available, bool), np.asarray(cache.exit_macs, np.float64), np.nan)
        return cls(
            segment.astype(np.float64),
            exit_,
            unit="macs",
            positions=tuple(cache.positions),
            exit_types=tuple(cache.exit_types),
            backbone=(cache.metadata or {}).get("backbone"),
            provenance=(cache.metadata or {}).get("provenance"),
        )

    # ------------------------------------------------------------- validation

    def check(self, cache, *, allow_mixed: bool = False, override: str | None = OVERRIDE_HINT) -> "Costs":
        """Check that these costs fit ``cache``; return self.

        Parameters
        ----------
        cache : ExitCache
        allow_mixed : bool
            Accept a profile made for another backbone or run, with a logged
            warning.
        override : str or None
            How the caller's user allows that, appended to the error (None:
            the caller offers no override, e.g. ``python -m analysis``).

        Raises
        ------
        CostError
            If P or K differ, if stored position / exit type names differ from
            the cache's, if an exit available in the cache has no cost here,
            or if the profile names another backbone or its provenance record
            shows another run (:func:`dyce_search.provenance.check_combinable`;
            a profile without a record, e.g. written by hand, is checked by
            names only).
        """
        P, K = int(cache.n_positions), int(cache.n_types)
        if (self.n_positions, self.n_types) != (P, K):
            raise CostError(
                f"costs are for {self.n_positions} positions x {self.n_types} exit types, the cache has {P} x {K}"
            )
        for what, mine, theirs in (
            ("positions", self.positions, tuple(cache.positions)),
            ("exit types", self.exit_types, tuple(cache.exit_types)),
        ):
            if mine is not None and mine != theirs:
                i = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), 0)
                raise CostError(f"cost {what} do not match the cache: {mine[i]!r} vs {theirs[i]!r} at index {i}")
        missing = np.asarray(cache.available, bool) & np.isnan(self.exit)
        if missing.any():
            p, k = (int(i) for i in np.argwhere(missing)[0])
            raise CostError(
                f"no cost for exit type {cache.exit_types[k]!r} at position {cache.positions[p]!r}, "
                "which the cache has"
            )
        check_combinable(
            Origin.of_cache(cache, "the cache"),
            Origin(f"the {self.unit} cost profile", self.provenance, None, None, self.backbone),
            allow_mixed=allow_mixed, error=CostError, require_record=False, override=override,
        )
        return self

    def adopted_by(self, cache) -> "Costs":
        """These costs relabelled with ``cache``'s backbone name and provenance record.

        For callers that allowed a profile of another run (``allow_mixed``):
        the warning is logged once where that was decided, and later checks
        of the same pair do not refuse it again.
        """
        from dataclasses import replace

        md = cache.metadata or {}
        return replace(self, backbone=md.get("backbone"), provenance=md.get("provenance"))

    # ---------------------------------------------------------------- derived

    def normalized(self) -> tuple[np.ndarray, np.ndarray]:
        """The paper's S_n and Delta_{n,k} (Eq. 11): costs divided by ``segment.sum()``.

        Returns
        -------
        S : float64 [P + 1]
            Normalised segment costs, summing to 1.
        Delta : float64 [P, K]
            Normalised exit costs, 0 where the profile has no such exit
            (an exit that does not exist never runs).
        """
        total = self.segment.sum()
        return self.segment / total, np.nan_to_num(self.exit, nan=0.0) / total

    def exit_costs(self) -> np.ndarray:
        """float64 [P, K]: exit costs in ``unit``, 0 where there is no such exit."""
        return np.nan_to_num(self.exit, nan=0.0)

    # --------------------------------------------------------------------- io

    def to_dict(self) -> dict:
        """The JSON document of docs/architecture.md (``null`` for missing exits)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "unit": self.unit,
            "backbone": self.backbone,
            "provenance": self.provenance,
            "positions": None if self.positions is None else list(self.positions),
            "exit_types": None if self.exit_types is None else list(self.exit_types),
            "segment": [float(v) for v in self.segment],
            "exit": [[None if math.isnan(v) else float(v) for v in row] for row in self.exit],
        }

    @classmethod
    def from_dict(cls, doc: dict, source: str = "costs") -> "Costs":
        """Inverse of :meth:`to_dict`; ``source`` names the origin in error messages."""
        check_header(doc, FORMAT, VERSION, source, CostError)
        for key in ("unit", "segment", "exit"):
            if key not in doc:
                raise CostError(f"{source}: missing field {key!r}")
        try:
            segment = np.array([np.nan if v is None else float(v) for v in doc["segment"]], np.float64)
        except (TypeError, ValueError) as e:
            raise CostError(f"{source}: field 'segment' must be a list of numbers ({e})") from None
        rows = doc["exit"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise CostError(f"{source}: field 'exit' must be a list of lists (one per position)")
        if len({len(r) for r in rows}) > 1:
            raise CostError(f"{source}: field 'exit' rows have different lengths {sorted({len(r) for r in rows})}")
        try:
            exit_ = np.array([[np.nan if v is None else float(v) for v in r] for r in rows], np.float64)
        except (TypeError, ValueError) as e:
            raise CostError(f"{source}: field 'exit' must hold numbers or null ({e})") from None
        if exit_.ndim != 2:
            exit_ = exit_.reshape(len(rows), 0)
        for key in ("positions", "exit_types"):
            v = doc.get(key)
            if v is not None and (not isinstance(v, list) or not all(isinstance(s, str) for s in v)):
                raise CostError(f"{source}: field {key!r} must be a list of strings")
        try:
            return cls(
                segment,
                exit_,
                unit=doc["unit"],
                positions=doc.get("positions"),
                exit_types=doc.get("exit_types"),
                backbone=doc.get("backbone"),
                provenance=doc.get("provenance"),
            )
        except CostError as e:
            raise CostError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path) -> "Costs":
        """Read a cost profile JSON file (format ``dyce-costs``, version 1).

        Raises
        ------
        CostError
            Naming the file and field if the document is malformed.
        OSError
            If the file cannot be read.
        """
        path = os.fspath(path)
        with open(path, encoding="utf-8") as fh:
            try:
                doc = json.load(fh)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:  # e.g. a cache passed for the profile
                raise CostError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(doc, source=path)

    def save(self, path) -> None:
        """Write the profile as JSON atomically (temp file in the same folder, then rename)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    def __repr__(self):
        return (
            f"Costs(unit={self.unit!r}, P={self.n_positions}, K={self.n_types}, "
            f"total={self.total:.6g}, backbone={self.backbone!r})"
        )

