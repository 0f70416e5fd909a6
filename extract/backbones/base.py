"""A pretrained classifier cut into N = P + 1 segments and a head.

Notation (paper Sec. III-A): the backbone is split into segments whose outputs
are o_1 .. o_N; exits attach to the early outputs o_1 .. o_{N-1}. In code the
early positions are 0-based, ``p = 0 .. P-1`` with ``P = N - 1``, and
``segments[p]`` maps o_{p-1} to o_p (the image to o_0 for ``p = 0``). The
last segment, ``segments[P]``, ends at the final feature map, which ``head``
(pooling + classifier, the paper's f_{N,1}) maps to logits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ExtractError
from .layout import NCHW, FeatureLayout


@dataclass(frozen=True)
class PositionInfo:
    """Where an early exit can attach: the output of one block of the original model.

    In the spirit of timm's ``FeatureInfo`` (with its ``output_fmt``).

    Attributes
    ----------
    name : str
        Readable position name, e.g. ``"layer3.22"`` or ``"stages.2.blocks.1"``.
    channels : int
        Channels C of o_p: dimension 1 of a map ``[B, C, H, W]``, the embedding
        width of tokens ``[B, L, C]``.
    reduction : int
        Spatial stride of o_p relative to the input image (4, 8, 16, 32 ...;
        the patch size for tokens).
    module : str
        Dotted path, in the original model, of the module whose output is o_p.
    layout : FeatureLayout
        NCHW maps (the default) or NLC tokens with their prefix tokens; decides
        how an exit pools o_p.
    """

    name: str
    channels: int
    reduction: int
    module: str
    layout: FeatureLayout = NCHW

    def to_dict(self) -> dict:
        """JSON-able dict: name, channels, reduction, module, and the layout fields unless NCHW.

        NCHW positions write no layout fields, so that every file written
        before layouts existed describes the same positions (and digests) still.
        """
        return {
            "name": self.name, "channels": self.channels, "reduction": self.reduction, "module": self.module,
            **self.layout.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> PositionInfo:
        """Inverse of :meth:`to_dict` (no ``layout`` field: NCHW)."""
        try:
            return cls(
                str(d["name"]), int(d["channels"]), int(d["reduction"]), str(d["module"]), FeatureLayout.from_dict(d)
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ExtractError(f"bad position entry {d!r}: needs name, channels, reduction, module") from exc


class SegmentedBackbone(nn.Module):
    """A frozen classifier as ``P + 1`` segments followed by its head.

    The segments and the head hold the original model's own submodules (no
    copies), so ``forward`` computes exactly what the original model computes.

    Parameters
    ----------
    name : str
        Backbone name, e.g. ``"resnet50"``.
    segments : sequence of nn.Module
        ``P + 1`` modules; ``segments[p]`` maps o_{p-1} to o_p.
    head : nn.Module
        Maps the last segment's output (final feature map) to logits (f_{N,1}).
    positions : sequence of PositionInfo
        The ``P`` early positions, ``positions[p]`` describing o_p.
    num_classes : int
        Number of logits the head (and every exit) produces.
    input_size : tuple of int
        Input size ``(C, H, W)`` the weights expect, e.g. ``(3, 224, 224)``.
    weights : str or None
        How the weights were obtained (``None`` for random init, a weights tag,
        or a checkpoint path); recorded in run metadata.

    Attributes
    ----------
    segments : nn.ModuleList
    head : nn.Module
    positions : list of PositionInfo
    num_classes, name, input_size, weights
    """

    def __init__(
        self,
        name: str,
        segments: Sequence[nn.Module],
        head: nn.Module,
        positions: Sequence[PositionInfo],
        num_classes: int,
        input_size: tuple[int, ...],
        weights: str | None = None,
    ):
        super().__init__()
        if len(segments) != len(positions) + 1:
            raise ExtractError(
                f"backbone {name!r}: {len(segments)} segments need {len(segments) - 1} positions, "
                f"got {len(positions)}"
            )
        if len(positions) == 0:
            raise ExtractError(f"backbone {name!r}: needs at least one early position (two segments)")
        names = [pos.name for pos in positions]
        if len(set(names)) != len(names):
            raise ExtractError(f"backbone {name!r}: position names are not unique: {names}")
        self.name = str(name)
        self.segments = nn.ModuleList(segments)
        self.head = head
        self.positions = list(positions)
        self.num_classes = int(num_classes)
        self.input_size = tuple(int(s) for s in input_size)
        self.weights = weights

    @property
    def num_positions(self) -> int:
        """P, the number of early positions (N - 1)."""
        return len(self.positions)

    @property
    def position_names(self) -> tuple[str, ...]:
        """Names of the P early positions, in order."""
        return tuple(pos.name for pos in self.positions)

    def run_segment(self, p: int, x: torch.Tensor) -> torch.Tensor:
        """Run segment ``p`` alone: o_{p-1} -> o_p (image -> o_0 for p = 0)."""
        return self.segments[p](x)

    def iter_segments(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Yield o_0, o_1, ..., o_P lazily, one segment at a time.

        The first ``P`` items are the early feature maps; the last is the final
        feature map (``head`` input). Stopping the iteration early skips the
        remaining segments, which is what a run-time early-exit model needs.
        """
        for segment in self.segments:
            x = segment(x)
            yield x

    def forward_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the whole model once and keep the early feature maps.

        Returns
        -------
        features : list of Tensor
            The P early feature maps o_0 .. o_{P-1}.
        logits : Tensor
            The head's output (the original model's output, y_N).
        """
        outputs = list(self.iter_segments(x))
        return outputs[:-1], self.head(outputs[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The original model's forward pass."""
        for segment in self.segments:
            x = segment(x)
        return self.head(x)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, positions={self.num_positions}, num_classes={self.num_classes}, "
            f"input_size={self.input_size}, weights={self.weights!r}"
        )
