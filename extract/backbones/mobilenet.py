"""torchvision MobileNetV3 (Howard et al. 2019) as segmented backbones.

``features`` is the stem convolution, the inverted-residual blocks and a final
1x1 convolution; the head is average pooling and the two-layer classifier. An
exit position follows every inverted-residual block but the last
(MobileNetV3-Small: 11 blocks, 10 positions; Large: 15 blocks, 14 positions).
Segment 0 is the stem and the first block; the final 1x1 convolution ends the
last segment.
"""

from __future__ import annotations

from torch import nn

from .generic import Split

MOBILENETS = ("mobilenet_v3_small", "mobilenet_v3_large")
INPUT_SIZE = (3, 224, 224)


def split(model: nn.Module) -> Split:
    """Position rule: stem, one inverted-residual block per segment, the final conv as tail."""
    stem, *blocks, last_conv = model.features
    return Split(
        stem=stem,
        blocks=[(f"features.{i}", block) for i, block in enumerate(blocks, start=1)],
        head=nn.Sequential(model.avgpool, nn.Flatten(1), model.classifier),
        num_classes=model.classifier[-1].out_features,
        tail=last_conv,
    )
