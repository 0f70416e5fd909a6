"""Multiply-accumulate counts of segments, exits and the whole model.

Counts come from ``torch.utils.flop_counter.FlopCounterMode`` (no hand-written
formulas): MACs = FLOPs / 2, over the operations it knows (convolutions and
matrix products; pooling, norms and activations count zero, the usual
convention behind "ResNet-50: 4.1 GMACs"). Everything runs on fake tensors
(shapes only), so counting all 49 x 5 exits of ResNet-152 takes a moment.

These counts are the cost model of the search (``dyce_search.Costs``):
``segment = diff([0, *backbone_macs, total_macs])``, ``exit = exit_macs``
(S_n and Delta_{n,k} of Eq. 11 before normalisation).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ._tracing import fake_mode, evaluating
from .backbones.base import SegmentedBackbone
from .errors import ExtractError
from .exits import ExitBank, ExitType

MODES = ("auto", "fake", "real")


def _flops(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[int, Any]:
    with FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return int(counter.get_total_flops()), out


def count_macs(fn: Callable[..., Any], *args: Any, mode: str = "auto", **kwargs: Any) -> int:
    """MACs executed by ``fn(*args, **kwargs)``, counted by FlopCounterMode.

    Parameters
    ----------
    fn : callable
        A module or any function running torch operations (e.g. a run-time
        early-exit model on one input: its executed MACs).
    *args, **kwargs
        Passed to ``fn``; tensors may be real or on the ``meta`` device.
    mode : {"auto", "fake", "real"}
        ``"fake"`` runs on fake tensors (shapes only, no arithmetic);
        ``"real"`` runs for real under ``torch.no_grad()`` (needed when the
        control flow depends on values, e.g. confidence thresholds);
        ``"auto"`` tries fake and falls back to real (so a callable with side
        effects may see them twice: use ``"real"`` for those).

    A module ``fn`` runs in eval mode (its training flags are restored after).

    Returns
    -------
    int
        FLOPs / 2.
    """
    if mode not in MODES:
        raise ExtractError(f"mode {mode!r} is not one of {MODES}")
    # Eval mode: a count must not update batch-norm statistics, and dropout is off at inference.
    with evaluating(fn if isinstance(fn, nn.Module) else None), torch.no_grad():
        if mode in ("auto", "fake"):
            try:
                with fake_mode():
                    return _flops(fn, args, kwargs)[0] // 2
            except Exception:  # noqa: BLE001 - fake propagation failed (data-dependent code)
                if mode == "fake":
                    raise
        return _flops(fn, args, kwargs)[0] // 2


@dataclass(frozen=True)
class MacsTable:
    """MACs of a segmented backbone and its exits for one input size (batch of one).

    Attributes
    ----------
    backbone : str
        Backbone name.
    input_size : tuple of int
        ``(C, H, W)`` the counts are for.
    positions : tuple of str
        The P early position names.
    exit_types : tuple of str
        The K exit type names.
    backbone_macs : ndarray int64 [P]
        Cumulative MACs from the input to the output o_p of early position p.
    exit_macs : ndarray int64 [P, K]
        MACs of exit (p, k); 0 where absent.
    total_macs : int
        MACs of the whole original model (head included).
    """

    backbone: str
    input_size: tuple[int, ...]
    positions: tuple[str, ...]
    exit_types: tuple[str, ...]
    backbone_macs: np.ndarray
    exit_macs: np.ndarray
    total_macs: int
    available: np.ndarray | None = None  # bool [P, K]; all True when not given

    def __post_init__(self):
        bm = np.ascontiguousarray(self.backbone_macs, dtype=np.int64)
        em = np.ascontiguousarray(self.exit_macs, dtype=np.int64).reshape(len(self.positions), len(self.exit_types))
        av = np.ones(em.shape, dtype=bool) if self.available is None else np.asarray(self.available, dtype=bool)
        if bm.shape != (len(self.positions),):
            raise ExtractError(f"backbone_macs has shape {bm.shape}, expected ({len(self.positions)},)")
        if av.shape != em.shape:
            raise ExtractError(f"available has shape {av.shape}, expected {em.shape}")
        if np.any(np.diff(bm) < 0) or (bm.size and bm[-1] > self.total_macs):
            raise ExtractError("backbone_macs must be non-decreasing and at most total_macs")
        object.__setattr__(self, "backbone_macs", bm)
        object.__setattr__(self, "exit_macs", em)
        object.__setattr__(self, "available", av)
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))
        object.__setattr__(self, "positions", tuple(self.positions))
        object.__setattr__(self, "exit_types", tuple(self.exit_types))
        object.__setattr__(self, "total_macs", int(self.total_macs))

    @property
    def segment_macs(self) -> np.ndarray:
        """int64 [P + 1]: MACs of each segment alone, the last one with the head (sums to total_macs)."""
        return np.diff(np.concatenate([[0], self.backbone_macs, [self.total_macs]])).astype(np.int64)

    def to_frame(self):
        """One row per early position plus a final ``head`` row.

        Columns: ``position``, ``backbone_macs`` (cumulative), ``segment_macs``,
        ``rel_backbone`` (backbone_macs / total_macs), then one column per exit
        type with its MACs (missing where the exit is absent, and on the head row).
        """
        import pandas as pd

        seg = self.segment_macs
        frame = pd.DataFrame(
            {
                "position": [*self.positions, "head"],
                "backbone_macs": np.concatenate([self.backbone_macs, [self.total_macs]]),
                "segment_macs": seg,
                "rel_backbone": np.concatenate([self.backbone_macs, [self.total_macs]]) / self.total_macs,
            }
        )
        for k, name in enumerate(self.exit_types):
            col = pd.array([*self.exit_macs[:, k].tolist(), None], dtype="Int64")
            col[np.flatnonzero(~self.available[:, k])] = pd.NA
            frame[name] = col
        return frame

    def to_text(self) -> str:
        """The table with MACs in millions, for printing (``python -m extract ... --macs``)."""
        frame = self.to_frame()
        for col in ["backbone_macs", "segment_macs", *self.exit_types]:
            frame[col] = frame[col].to_numpy(dtype=float, na_value=np.nan) / 1e6
        frame = frame.rename(columns={c: f"{c} [M]" for c in ["backbone_macs", "segment_macs"]})
        header = (
            f"{self.backbone} at {'x'.join(map(str, self.input_size))}: total {self.total_macs / 1e9:.3f} GMACs, "
            f"{len(self.positions)} early positions; MACs in millions, exits '-' where absent"
        )
        return header + "\n" + frame.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}")

    def to_dict(self) -> dict:
        """JSON-able dict (see :meth:`from_dict`)."""
        return {
            "format": "dyce-macs",
            "version": 1,
            "backbone": self.backbone,
            "input_size": list(self.input_size),
            "positions": list(self.positions),
            "exit_types": list(self.exit_types),
            "backbone_macs": self.backbone_macs.tolist(),
            "exit_macs": self.exit_macs.tolist(),
            "available": self.available.tolist(),
            "total_macs": self.total_macs,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> MacsTable:
        if d.get("format") != "dyce-macs":
            raise ExtractError(f"not a MACs table (format {d.get('format')!r})")
        try:
            return cls(
                backbone=d["backbone"],
                input_size=tuple(d["input_size"]),
                positions=tuple(d["positions"]),
                exit_types=tuple(d["exit_types"]),
                backbone_macs=np.asarray(d["backbone_macs"], dtype=np.int64),
                exit_macs=np.asarray(d["exit_macs"], dtype=np.int64),
                total_macs=int(d["total_macs"]),
                available=np.asarray(d["available"], dtype=bool),
            )
        except KeyError as exc:
            raise ExtractError(f"MACs table lacks field {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> MacsTable:
        return cls.from_dict(json.loads(text))


def _exit_bank(backbone: SegmentedBackbone, exits: ExitBank | Sequence[ExitType] | None) -> ExitBank | None:
    if exits is None or isinstance(exits, ExitBank):
        return exits
    # Only shapes matter for counting: build on the meta device (no memory, no init cost).
    with torch.device("meta"):
        return ExitBank(backbone.positions, exits, backbone.num_classes)


def _count_all(backbone: SegmentedBackbone, bank: ExitBank | None, input_size: tuple[int, ...], device):
    x = torch.zeros(1, *input_size, device=device)
    segment_flops = []
    features = []
    for segment in backbone.segments:
        flops, x = _flops(segment, (x,), {})
        segment_flops.append(flops)
        features.append(x)
    head_flops, _ = _flops(backbone.head, (x,), {})
    exit_flops = {}
    if bank is not None:
        # Exit costs depend on the feature shape only; feed a blank of that shape on
        # the bank's own device (a meta bank may serve a real backbone).
        bank_device = next(iter(bank.parameters())).device
        for p, k, head in bank.exits():
            blank = torch.zeros(features[p].shape, device=bank_device)
            exit_flops[(p, k)] = _flops(head, (blank,), {})[0]
    return segment_flops, head_flops, exit_flops


def macs_table(
    backbone: SegmentedBackbone,
    exits: ExitBank | Sequence[ExitType] | None = None,
    input_size: tuple[int, ...] | None = None,
) -> MacsTable:
    """Count the MACs of every segment, the head and every exit, batch of one.

    Parameters
    ----------
    backbone : SegmentedBackbone
        Real, fake or meta weights alike (nothing is computed).
    exits : ExitBank or sequence of ExitType, optional
        The exits to count; a sequence means those types at every position.
        ``None`` counts no exits (K = 0).
    input_size : tuple of int, optional
        ``(C, H, W)``; defaults to ``backbone.input_size``.

    Returns
    -------
    MacsTable
        ``backbone_macs[p]`` cumulative to o_p, ``exit_macs[p, k]``,
        ``total_macs`` = sum of all segments and the head.
    """
    size = tuple(backbone.input_size if input_size is None else input_size)
    bank = _exit_bank(backbone, exits)
    if bank is not None and [p.name for p in bank.positions] != list(backbone.position_names):
        raise ExtractError(
            f"exit bank positions {[p.name for p in bank.positions][:3]}... do not match "
            f"backbone {backbone.name!r} positions {list(backbone.position_names)[:3]}..."
        )
    device = next(iter(backbone.parameters()), torch.zeros(0)).device
    with evaluating(backbone, bank), torch.no_grad():
        if device.type == "meta":
            # Meta tensors already skip the arithmetic, and faster than fake ones.
            segment_flops, head_flops, exit_flops = _count_all(backbone, bank, size, device)
        else:
            try:
                with fake_mode():
                    segment_flops, head_flops, exit_flops = _count_all(backbone, bank, size, device)
            except Exception:  # noqa: BLE001 - fake propagation failed: count on a real forward
                segment_flops, head_flops, exit_flops = _count_all(backbone, bank, size, device)
    segment_macs = np.asarray(segment_flops, dtype=np.int64) // 2
    types = bank.exit_types if bank is not None else ()
    exit_macs = np.zeros((backbone.num_positions, len(types)), dtype=np.int64)
    for (p, k), flops in exit_flops.items():
        exit_macs[p, k] = flops // 2
    return MacsTable(
        backbone=backbone.name,
        input_size=size,
        positions=backbone.position_names,
        exit_types=types,
        backbone_macs=np.cumsum(segment_macs[:-1]),
        exit_macs=exit_macs,
        total_macs=int(segment_macs.sum() + head_flops // 2),
        available=bank.available if bank is not None else np.zeros((backbone.num_positions, 0), dtype=bool),
    )
