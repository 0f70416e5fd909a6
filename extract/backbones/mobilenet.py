"""timm MobileNetV3 (Howard et al. 2019) as segmented backbones.

timm's ``MobileNetV3`` runs ``conv_stem`` and ``bn1``, then ``blocks``: stages
of one depthwise-separable block and inverted-residual blocks, closed by a
1x1 ``ConvBnAct`` stage; its head pools, applies ``conv_head`` (a 1x1
convolution on the pooled vector), ``norm_head``, ``act2`` and the classifier.
An exit position follows every depthwise-separable or inverted-residual block
but the last (MobileNetV3-Small: 11 blocks, 10 positions; Large: 15 blocks, 14
positions). Segment 0 is the stem and the first block; the closing 1x1 stage
ends the last segment.
"""

from __future__ import annotations

import torch
from torch import nn

from .generic import Split

MOBILENETS = ("mobilenetv3_small_100", "mobilenetv3_large_100")


class Head(nn.Module):
    """timm's ``forward_head`` of a MobileNetV3 on the model's own modules (shared, not copied)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.global_pool = model.global_pool
        self.conv_head = model.conv_head
        self.norm_head = model.norm_head
        self.act2 = model.act2
        self.flatten = model.flatten
        self.classifier = model.classifier
        self.drop_rate = model.drop_rate
        self._forward_head = type(model).forward_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_head(self, x)


def split(model: nn.Module) -> Split:
    """Position rule: stem, one DS/IR block per segment, the closing 1x1 stage as tail."""
    *stages, closing = model.blocks
    blocks = [(f"blocks.{i}.{j}", block) for i, stage in enumerate(stages) for j, block in enumerate(stage)]
    return Split(
        stem=nn.Sequential(model.conv_stem, model.bn1),
        blocks=blocks,
        head=Head(model),
        num_classes=model.num_classes,
        tail=closing,
    )
