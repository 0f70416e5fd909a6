"""Segment any classifier that is a stem, a sequence of blocks and a head.

This is the adapter behind every built-in family (``families.py``) and the
one a user calls for a new architecture (see docs/backbones.md). An exit
position follows every block but the last; the last block's output is the
final feature map that the head consumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .._tracing import evaluating, run_shapes_only
from ..errors import ExtractError
from . import layout as layouts
from .base import PositionInfo, SegmentedBackbone
from .layout import FeatureLayout

NamedBlocks = Mapping[str, nn.Module] | Sequence[tuple[str, nn.Module]] | Sequence[nn.Module] | nn.Sequential


class Split(NamedTuple):
    """A classifier cut into the parts :func:`from_blocks` takes: a family's position rule returns one."""

    stem: nn.Module | None
    blocks: NamedBlocks
    head: nn.Module
    num_classes: int
    tail: nn.Module | None = None
    block_prefix: Mapping[str, nn.Module] | None = None


def from_split(
    name: str, split: Split, input_size: tuple[int, ...], layout: FeatureLayout | None, weights: str | None = None
) -> SegmentedBackbone:
    """:func:`from_blocks` on the parts of a :class:`Split`."""
    return from_blocks(
        name, split.stem, split.blocks, split.head, split.num_classes, input_size,
        tail=split.tail, block_prefix=split.block_prefix, weights=weights, layout=layout,
    )


def _named(blocks: NamedBlocks) -> list[tuple[str, nn.Module]]:
    if isinstance(blocks, (nn.Sequential, nn.ModuleDict)):
        return [(name, m) for name, m in blocks.named_children()]
    if isinstance(blocks, Mapping):
        return [(str(name), m) for name, m in blocks.items()]
    out = []
    for i, item in enumerate(blocks):
        if isinstance(item, nn.Module):
            out.append((f"blocks.{i}", item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], nn.Module):
            out.append((str(item[0]), item[1]))
        else:
            raise ExtractError(f"block {i} is {type(item).__name__}, expected an nn.Module or a (name, module) pair")
    return out


def _chain(*modules: nn.Module | None) -> nn.Module:
    present = [m for m in modules if m is not None]
    return present[0] if len(present) == 1 else nn.Sequential(*present)


def infer_positions(
    segments: Sequence[nn.Module],
    names: Sequence[str],
    modules: Sequence[str],
    input_size: tuple[int, ...],
    layout: FeatureLayout | None = None,
) -> list[PositionInfo]:
    """Layout, channels and reduction of each early output, from one probe forward.

    The probe runs on fake tensors (no arithmetic) with a batch of one at
    ``input_size``. With ``layout=None`` each output's layout is inferred
    where its shape allows one reading only (``[B, C, H, W]``: NCHW); a
    rank-3 output could be tokens or a 1-d map and is refused, as is any
    output that does not fit a given ``layout``.
    """
    if len(input_size) < 2:
        raise ExtractError(f"input_size {tuple(input_size)} must be (C, H, ...) ")
    probe_device = _device_of(segments)

    def probe(x: torch.Tensor) -> list[tuple[int, ...]]:
        shapes = []
        for segment in segments[:-1]:
            x = segment(x)
            if not isinstance(x, torch.Tensor):
                raise ExtractError(f"block output is {type(x).__name__}, expected a tensor feature map")
            shapes.append(tuple(x.shape))
        return shapes

    with evaluating(*segments):
        shapes, _ = run_shapes_only(probe, lambda: (torch.zeros(1, *input_size, device=probe_device),))
    positions = []
    for name, module, shape in zip(names, modules, shapes):
        where = f"position {name!r}"
        found = layouts.infer(shape, input_size, where) if layout is None else layout
        positions.append(
            PositionInfo(
                name=name,
                channels=found.channels(shape, where),
                reduction=found.reduction(shape, input_size, where),
                module=module,
                layout=found,
            )
        )
    return positions


def _device_of(modules: Sequence[nn.Module]) -> torch.device:
    for module in modules:
        for tensor in module.parameters():
            return tensor.device
        for tensor in module.buffers():
            return tensor.device
    return torch.device("cpu")


def from_blocks(
    name: str,
    stem: nn.Module | None,
    blocks: NamedBlocks,
    head: nn.Module,
    num_classes: int,
    input_size: tuple[int, ...],
    *,
    tail: nn.Module | None = None,
    block_prefix: Mapping[str, nn.Module] | None = None,
    weights: str | None = None,
    layout: FeatureLayout | None = None,
) -> SegmentedBackbone:
    """Wrap ``head(tail(blocks[-1](...blocks[0](stem(x)))))`` as a SegmentedBackbone.

    Exits attach after every block but the last, so ``len(blocks) - 1`` early
    positions and ``len(blocks)`` segments: segment 0 is ``stem`` + block 0,
    segment p is block p, and the last segment is the last block + ``tail``.

    Parameters
    ----------
    name : str
        Backbone name (recorded in caches and run directories).
    stem : nn.Module or None
        Runs before the first block (e.g. conv + norm + pooling).
    blocks : nn.Sequential, mapping name -> module, list of (name, module) or list of modules
        The blocks, in order. Their names become the position names (unnamed
        blocks are called ``blocks.{i}``).
    head : nn.Module
        Maps the final feature map to logits (pooling + classifier).
    num_classes : int
        Number of logits.
    input_size : tuple of int
        ``(C, H, W)`` of one input; used for the shape probe and MAC counts.
    tail : nn.Module, optional
        Runs after the last block, before the head (e.g. a final norm).
    block_prefix : mapping block name -> nn.Module, optional
        A module to run just before a given block, in the same segment (e.g. a
        stage's downsampling layer before the stage's first block).
    weights : str, optional
        Provenance of the weights, kept as ``backbone.weights``.
    layout : FeatureLayout, optional
        Layout of every block output: ``layout.NCHW`` or
        ``layout.tokens(prefix_tokens, class_token)``. Left out, it is inferred
        from the probe shapes where only one reading exists (rank 4: NCHW).

    Returns
    -------
    SegmentedBackbone
        Whose ``forward`` equals the wrapped model's forward.

    Raises
    ------
    ExtractError
        A block output whose layout is ambiguous (``[B, L, C]`` or ``[B, C, L]``
        without ``layout=``) or does not fit ``layout``, naming the position and shape.
    """
    named = _named(blocks)
    if len(named) < 2:
        raise ExtractError(f"backbone {name!r}: needs at least two blocks to have an early position, got {len(named)}")
    prefix = dict(block_prefix or {})
    unknown = set(prefix) - {n for n, _ in named}
    if unknown:
        raise ExtractError(f"backbone {name!r}: block_prefix names unknown blocks {sorted(unknown)}")
    segments = []
    for i, (block_name, block) in enumerate(named):
        parts = [stem if i == 0 else None, prefix.get(block_name), block]
        if i == len(named) - 1:
            parts.append(tail)
        segments.append(_chain(*parts))
    block_names = [n for n, _ in named[:-1]]
    positions = infer_positions(segments, block_names, block_names, tuple(input_size), layout)
    return SegmentedBackbone(
        name=name,
        segments=segments,
        head=head,
        positions=positions,
        num_classes=num_classes,
        input_size=tuple(input_size),
        weights=weights,
    )
