"""The table of built-in backbone families: one entry per family, everything a build needs.

Adding a family is one :class:`Family` entry in :data:`FAMILIES`: how to create
the model, its position rule (where exits attach), the layout of its features,
its input size and where its pretrained weights come from. ``build_backbone``,
``eval_transform``, ``SUPPORTED``, the CLI and the MACs table read this table
and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import ExtractError
from . import convnext, mobilenet, pretrained, resnet, vit
from .base import SegmentedBackbone
from .generic import Split, from_split
from .layout import NCHW, FeatureLayout
from .pretrained import TIMM, TORCHVISION, TimmWeights, TorchvisionWeights, timm_input_size


@dataclass(frozen=True)
class Family:
    """One architecture family.

    Attributes
    ----------
    title : str
        What the family is, for tables and messages (``"torchvision ResNet"``).
    names : tuple of str
        The backbone names it builds.
    create : callable ``(name, num_classes, **kwargs) -> nn.Module``
        Builds the original model with random weights; timm families also
        take ``tag=`` and ``pretrained=`` (their download).
    split : callable ``model -> Split``
        The position rule: stem, blocks (an exit after each but the last),
        tail and head of the model.
    layout : callable ``model -> FeatureLayout``
        Layout of every early output o_p.
    input_size : callable ``model -> (C, H, W)``
        The input the model is built for.
    weights : TorchvisionWeights or TimmWeights
        Pretrained weights: tags, download, evaluation and training transform
        (timm's ``create_transform(is_training=True)`` or torchvision's reference recipe).
    classifier_key : str
        State-dict key of the original model's classifier weight (names a
        class-count mismatch of a checkpoint).
    positions : str
        The position rule in words, for the docs.
    """

    title: str
    names: tuple[str, ...]
    create: Callable[..., nn.Module]
    split: Callable[[nn.Module], Split]
    layout: Callable[[nn.Module], FeatureLayout]
    input_size: Callable[[nn.Module], tuple[int, ...]]
    weights: TorchvisionWeights | TimmWeights
    classifier_key: str
    positions: str

    def segment(self, model: nn.Module, name: str, weights: str | None = None) -> SegmentedBackbone:
        """Cut ``model`` (its modules shared, not copied) by the family's position rule."""
        return from_split(name, self.split(model), self.input_size(model), self.layout(model), weights)


def _maps(model: nn.Module) -> FeatureLayout:
    return NCHW


def _fixed(size: tuple[int, ...]) -> Callable[[nn.Module], tuple[int, ...]]:
    return lambda model: size


# Creators are looked up at call time, so that tests can replace the download functions.
FAMILIES: tuple[Family, ...] = (
    Family(
        title="torchvision ResNet",
        names=resnet.RESNETS,
        create=lambda name, num_classes, **kw: pretrained.create_torchvision(name, num_classes, **kw),
        split=resnet.split,
        layout=_maps,
        input_size=_fixed(resnet.INPUT_SIZE),
        weights=TORCHVISION,
        classifier_key="fc.weight",
        positions="after every residual block but the last",
    ),
    Family(
        title="timm ConvNeXtV2",
        names=convnext.CONVNEXTS,
        create=lambda name, num_classes, **kw: convnext.create_convnext(name, num_classes, **kw),
        split=convnext.split,
        layout=_maps,
        input_size=timm_input_size,
        weights=TIMM,
        classifier_key="head.fc.weight",
        positions="after every ConvNeXt block but the last",
    ),
    Family(
        title="timm ViT / DeiT",
        names=vit.VITS + vit.DEITS,
        create=lambda name, num_classes, **kw: pretrained.create_timm(name, num_classes, **kw),
        split=vit.split,
        layout=vit.layout,
        input_size=vit.input_size,
        weights=TIMM,
        classifier_key="head.weight",
        positions="after every transformer block but the last (tokens, class token first)",
    ),
    Family(
        title="timm MobileNetV3",
        names=mobilenet.MOBILENETS,
        create=lambda name, num_classes, **kw: pretrained.create_timm(name, num_classes, **kw),
        split=mobilenet.split,
        layout=_maps,
        input_size=timm_input_size,
        weights=TIMM,
        classifier_key="classifier.weight",
        positions="after every depthwise-separable or inverted-residual block but the last",
    ),
)

BY_NAME: dict[str, Family] = {name: family for family in FAMILIES for name in family.names}
if len(BY_NAME) != sum(len(f.names) for f in FAMILIES):
    raise ExtractError("two backbone families claim the same name")

