"""timm vision transformers, ViT (Dosovitskiy et al. 2021) and DeiT (Touvron et al. 2021), as segmented backbones.

timm's ``VisionTransformer`` embeds patches, adds the class token and the
position embedding, runs ``blocks`` and ends with ``norm`` and the pooling
head. An exit position follows every transformer block but the last (depth
12: 11 positions). Segment 0 is the embedding (:class:`Embed`: patch
embedding, class token, position embedding) and block 0; the head
(:class:`Head`) is the final norm, timm's pooling (the class token for these
models) and the classifier. Every o_p is NLC tokens ``[B, 1 + L, C]`` led by
the class token.
"""

from __future__ import annotations

import torch
from torch import nn

from .generic import Split
from .layout import FeatureLayout, tokens

VITS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")
DEITS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")


class Embed(nn.Module):
    """Patch embedding, prefix tokens and position embedding of a timm ViT (its ``_pos_embed``).

    Holds the model's own modules and parameters (shared, not copied) and runs
    timm's own ``_pos_embed`` on them, so that every variant (no class token,
    register tokens, embeddings without class entry) computes what timm does.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.patch_embed = model.patch_embed
        self.cls_token = model.cls_token
        self.reg_token = model.reg_token
        self.pos_embed = model.pos_embed
        self.pos_drop = model.pos_drop
        self.patch_drop = model.patch_drop
        self.norm_pre = model.norm_pre
        self.dynamic_img_size = model.dynamic_img_size
        self.no_embed_class = model.no_embed_class
        self.num_prefix_tokens = model.num_prefix_tokens
        self._pos_embed_of = type(model)._pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pos_embed_of(self, self.patch_embed(x))
        return self.norm_pre(self.patch_drop(x))


class Head(nn.Module):
    """Final norm, pooling and classifier of a timm ViT (``norm`` then ``forward_head``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.norm = model.norm
        self.attn_pool = model.attn_pool
        self.fc_norm = model.fc_norm
        self.head_drop = model.head_drop
        self.head = model.head
        self.global_pool = model.global_pool
        self.num_prefix_tokens = model.num_prefix_tokens
        self.pool_include_prefix = model.pool_include_prefix
        self._pool_of = type(model).pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pool_of(self, self.norm(x))
        return self.head(self.head_drop(self.fc_norm(x)))


def split(model: nn.Module) -> Split:
    """Position rule: the embedding, then one block per segment; norm, pooling and classifier in the head."""
    blocks = [(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]
    return Split(stem=Embed(model), blocks=blocks, head=Head(model), num_classes=model.num_classes)


def layout(model: nn.Module) -> FeatureLayout:
    """NLC tokens, led by the class token (and any register tokens)."""
    return tokens(model.num_prefix_tokens, class_token=model.cls_token is not None)


def input_size(model: nn.Module) -> tuple[int, int, int]:
    """``(3, H, W)`` the position embedding was built for (``img_size``)."""
    return (model.patch_embed.proj.in_channels, *model.patch_embed.img_size)
