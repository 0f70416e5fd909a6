"""torchvision ResNets (He et al. 2016) as segmented backbones.

An exit position follows every residual block but the last (paper Sec. VI-B):
ResNet-18/34/50/101/152 have 7/15/15/32/49 early positions. Segment 0 is the
stem (conv1, bn1, relu, maxpool) and ``layer1.0``; the head is avgpool,
flatten and fc, exactly as in ``torchvision.models.ResNet.forward``.
"""

from __future__ import annotations

from torch import nn

from .base import SegmentedBackbone
from .generic import Split, from_split
from .layout import NCHW
from .pretrained import create_torchvision

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
INPUT_SIZE = (3, 224, 224)


def split(model: nn.Module) -> Split:
    """Position rule: the stem, then one residual block per segment; avgpool, flatten and fc as head."""
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    blocks = [
        (f"{layer}.{j}", block)
        for layer in ("layer1", "layer2", "layer3", "layer4")
        for j, block in enumerate(getattr(model, layer))
    ]
    head = nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)
    return Split(stem, blocks, head, num_classes=model.fc.out_features)


def segment_resnet(model: nn.Module, name: str, weights: str | None = None) -> SegmentedBackbone:
    """Cut a ``torchvision.models.ResNet`` after every residual block.

    Parameters
    ----------
    model : torchvision.models.ResNet
        Any torchvision ResNet (its modules are shared, not copied).
    name : str
        Backbone name, e.g. ``"resnet50"``.
    weights : str, optional
        Provenance of the weights.
    """
    return from_split(name, split(model), INPUT_SIZE, NCHW, weights)


def create_resnet(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised torchvision ResNet (no download)."""
    return create_torchvision(name, num_classes)
