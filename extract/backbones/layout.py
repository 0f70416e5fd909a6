"""How a feature o_p is laid out, and what that means for channels, stride and pooling.

Two layouts exist, as timm's ``output_fmt`` names them:

* ``NCHW``: a feature map ``[B, C, H, W]`` (convolutional networks);
* ``NLC``: a token sequence ``[B, L, C]`` (vision transformers), whose first
  ``prefix_tokens`` tokens are not image patches (a class token, register
  tokens); ``class_token`` says whether token 0 is a class token.

An exit reads C features per sample. For maps they are the global average over
space (paper Sec. IV-A); for tokens either the mean over the patch tokens
(``"avg"``, the default: it exists at every position of every token model) or
the class token (``"token"``), as timm's ``global_pool`` names them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..errors import ExtractError

FORMATS = ("NCHW", "NLC")
TOKEN_POOLS = ("avg", "token")
DEFAULT_TOKEN_POOL = "avg"


@dataclass(frozen=True)
class FeatureLayout:
    """The layout of one position's output o_p.

    Attributes
    ----------
    fmt : {"NCHW", "NLC"}
        Feature maps ``[B, C, H, W]`` or tokens ``[B, L, C]``.
    prefix_tokens : int
        ``NLC`` only: leading tokens that are not patches (class and register tokens).
    class_token : bool
        ``NLC`` only: whether token 0 is a class token.
    """

    fmt: str = "NCHW"
    prefix_tokens: int = 0
    class_token: bool = False

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ExtractError(f"layout {self.fmt!r} is not one of {FORMATS}")
        if self.prefix_tokens < 0:
            raise ExtractError(f"layout {self.fmt}: prefix_tokens must be >= 0, got {self.prefix_tokens}")
        if self.fmt == "NCHW" and (self.prefix_tokens or self.class_token):
            raise ExtractError("layout NCHW has no tokens: prefix_tokens=0 and class_token=False")
        if self.class_token and self.prefix_tokens < 1:
            raise ExtractError("layout NLC with a class token needs prefix_tokens >= 1 (the class token is one)")

    @property
    def is_tokens(self) -> bool:
        return self.fmt == "NLC"

    def rank(self) -> int:
        """Dimensions of a batch of features in this layout."""
        return 4 if self.fmt == "NCHW" else 3

    def channels(self, shape: tuple[int, ...], where: str) -> int:
        """C of a batch of features of ``shape``; ExtractError if the shape does not fit the layout."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.rank():
            want = "[B, C, H, W]" if self.fmt == "NCHW" else "[B, L, C]"
            raise ExtractError(f"{where}: output shape {shape} is not {self.fmt} {want}")
        if self.is_tokens and shape[1] <= self.prefix_tokens:
            raise ExtractError(f"{where}: {shape[1]} tokens leave no patch token after {self.prefix_tokens} prefix tokens")
        return shape[1] if self.fmt == "NCHW" else shape[2]

    def reduction(self, shape: tuple[int, ...], input_size: tuple[int, ...], where: str) -> int:
        """Stride of o_p relative to the ``(C, H, W)`` input: H / h for maps, the patch size for tokens."""
        self.channels(shape, where)
        height = int(input_size[1])
        width = int(input_size[2]) if len(input_size) > 2 else 1
        if self.fmt == "NCHW":
            return max(1, round(height / shape[2]))
        patches = shape[1] - self.prefix_tokens
        stride = math.isqrt(height * width // patches) if patches <= height * width else 0
        if stride < 1 or (height // stride) * (width // stride) != patches:
            raise ExtractError(
                f"{where}: {patches} patch tokens do not tile the {height}x{width} input at any stride; "
                f"check prefix_tokens={self.prefix_tokens}"
            )
        return stride

    def pool(self, features: torch.Tensor, token_pool: str = DEFAULT_TOKEN_POOL) -> torch.Tensor:
        """``[B, C]`` exit input: mean over space (maps), over patch tokens or the class token (tokens)."""
        if self.fmt == "NCHW":
            return features.flatten(2).mean(dim=2) if features.dim() > 2 else features
        if features.dim() != 3:
            raise ExtractError(f"NLC features must be [B, L, C], got shape {tuple(features.shape)}")
        if token_pool == "token":
            return features[:, 0]
        return features[:, self.prefix_tokens :].mean(dim=1)

    def check_pool(self, token_pool: str, where: str) -> None:
        """ExtractError unless ``token_pool`` can pool features of this layout."""
        if token_pool not in TOKEN_POOLS:
            raise ExtractError(f"{where}: token pooling {token_pool!r} is not one of {TOKEN_POOLS}")
        if token_pool == "token" and not self.class_token:
            raise ExtractError(
                f"{where}: class-token pooling needs tokens led by a class token; this position is "
                f"{self.describe()}"
            )

    def describe(self) -> str:
        if self.fmt == "NCHW":
            return "NCHW"
        return f"NLC ({self.prefix_tokens} prefix tokens, {'a' if self.class_token else 'no'} class token)"

    def to_dict(self) -> dict:
        """Fields for a position dict; empty for NCHW maps, the layout every file before layouts had."""
        if self.fmt == "NCHW":
            return {}
        return {"layout": self.fmt, "prefix_tokens": self.prefix_tokens, "class_token": self.class_token}

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureLayout:
        """Inverse of :meth:`to_dict`: a position dict without ``layout`` is NCHW."""
        try:
            return cls(
                str(d.get("layout", "NCHW")), int(d.get("prefix_tokens", 0)), bool(d.get("class_token", False))
            )
        except (TypeError, ValueError) as exc:
            raise ExtractError(f"bad layout fields in {dict(d)!r}: {exc}") from exc


NCHW = FeatureLayout("NCHW")


def tokens(prefix_tokens: int = 0, class_token: bool = False) -> FeatureLayout:
    """The ``NLC`` layout, e.g. ``tokens(1, class_token=True)`` for a ViT with a class token."""
    return FeatureLayout("NLC", prefix_tokens, class_token)


def infer(shape: tuple[int, ...], input_size: tuple[int, ...], where: str) -> FeatureLayout:
    """The layout of an output of ``shape`` when it admits one reading only.

    Rank 4 is NCHW when height and width shrink by the same stride; otherwise
    it may be channels-last ``[B, H, W, C]``. A rank-3 output may be tokens
    ``[B, L, C]`` or a 1-d map ``[B, C, L]``, and any other rank has no layout
    an exit can pool. All of those are refused, naming the shape.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4:
        if len(input_size) > 2 and round(input_size[1] / shape[2]) != round(input_size[2] / shape[3]):
            raise ExtractError(
                f"{where}: output shape {shape} does not read as NCHW of a {input_size[1]}x{input_size[2]} input "
                "(height and width strides differ; channels last?); pass layout=NCHW if it is"
            )
        return NCHW
    if len(shape) == 3:
        raise ExtractError(
            f"{where}: output shape {shape} is ambiguous (tokens [B, L, C] or a map [B, C, L]); "
            "pass layout=extract.backbones.layout.tokens(prefix_tokens, class_token) for tokens"
        )
    raise ExtractError(f"{where}: output shape {shape} is neither NCHW [B, C, H, W] nor NLC [B, L, C]")
