"""Segmented backbones: a frozen classifier as P + 1 segments and a head (paper Sec. III-A)."""

from .base import PositionInfo, SegmentedBackbone
from .checkpoint import load_checkpoint, load_state_strict, read_state_dict
from .generic import from_blocks
from .layout import NCHW, FeatureLayout, tokens
from .registry import SUPPORTED, available, build_backbone, eval_transform, register_backbone, train_transform

__all__ = [
    "NCHW",
    "SUPPORTED",
    "FeatureLayout",
    "PositionInfo",
    "SegmentedBackbone",
    "available",
    "build_backbone",
    "eval_transform",
    "train_transform",
    "from_blocks",
    "load_checkpoint",
    "load_state_strict",
    "read_state_dict",
    "register_backbone",
    "tokens",
]
