"""timm ConvNeXtV2 (Woo et al. 2023) as segmented backbones.

timm's ConvNeXt runs ``stem``, ``stages[0..3]`` (each ``downsample`` then
``blocks``), ``norm_pre`` and ``head`` (global pool, norm, fc). An exit
position follows every block but the last; a stage's ``downsample`` runs at the
start of the segment holding the stage's first block, and ``norm_pre`` at the
end of the last segment.
"""

from __future__ import annotations

from torch import nn

from .base import SegmentedBackbone
from .generic import Split, from_split
from .layout import NCHW
from .pretrained import TIMM, create_timm, timm_cfg, timm_tags

CONVNEXTS = ("convnextv2_atto", "convnextv2_femto", "convnextv2_pico", "convnextv2_nano", "convnextv2_tiny")


def split(model: nn.Module) -> Split:
    """Position rule: one block per segment, a stage's downsampling before its first block, norm_pre as tail."""
    blocks = []
    prefix = {}
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            block_name = f"stages.{i}.blocks.{j}"
            blocks.append((block_name, block))
            if j == 0 and not isinstance(stage.downsample, nn.Identity):
                prefix[block_name] = stage.downsample
    tail = None if isinstance(model.norm_pre, nn.Identity) else model.norm_pre
    return Split(model.stem, blocks, model.head, num_classes=model.num_classes, tail=tail, block_prefix=prefix)


def segment_convnext(
    model: nn.Module, name: str, input_size: tuple[int, ...], weights: str | None = None
) -> SegmentedBackbone:
    """Cut a ``timm.models.ConvNeXt`` after every block.

    Parameters
    ----------
    model : timm.models.convnext.ConvNeXt
        Its modules are shared, not copied.
    name : str
        Backbone name, e.g. ``"convnextv2_atto"``.
    input_size : tuple of int
        ``(C, H, W)`` of the weights' pretrained config.
    weights : str, optional
        Provenance of the weights.
    """
    return from_split(name, split(model), input_size, NCHW, weights)


def pretrained_tags(name: str) -> tuple[str, ...]:
    """timm's pretrained tags of ``name`` that carry an ImageNet classifier."""
    return timm_tags(name)


def default_tag(name: str) -> str:
    """The tag timm loads for ``name`` with ``pretrained=True``."""
    return TIMM.resolve(name, "default")


def pretrained_cfg(name: str, tag: str | None) -> dict:
    """timm's pretrained config (input size, mean/std, crop) as a dict."""
    return timm_cfg(name, tag)


def create_convnext(name: str, num_classes: int, tag: str | None = None, pretrained: bool = False) -> nn.Module:
    """Create a timm ConvNeXtV2; with ``pretrained=True`` timm downloads the weights."""
    return create_timm(name, num_classes, tag=tag, pretrained=pretrained)
