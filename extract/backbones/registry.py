"""Backbones by name: ``build_backbone(name, weights)`` and ``eval_transform(name, weights)``.

Weights specs, the same for every built-in backbone:

* ``None``, ``"none"`` or ``"random"``: random initialisation (no download);
* ``"default"``/``"DEFAULT"``: the library's default pretrained weights;
* a torchvision weights name (``"IMAGENET1K_V2"``) or a timm pretrained tag
  (``"fcmae_ft_in1k"``): those pretrained weights, downloaded by
  torchvision/timm into their usual cache on first use;
* a path to a local ``.pt``/``.pth`` file (a state dict of the original model,
  or a dict holding it under ``"state_dict"``/``"model"``; a SegmentedBackbone
  state dict works too): loaded strictly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ExtractError
from . import convnext, resnet
from .base import SegmentedBackbone
from .checkpoint import load_checkpoint, load_state_strict, looks_like_path

SUPPORTED: tuple[str, ...] = resnet.RESNETS + convnext.CONVNEXTS
"""Names of the built-in backbones."""

RANDOM_SPECS = ("none", "random", "")
DEFAULT_SPECS = ("default", "DEFAULT")


@dataclass(frozen=True)
class _Registered:
    factory: Callable[[str | None, int], SegmentedBackbone]
    transform: Callable[[str | None], Callable] | None


_USER: dict[str, _Registered] = {}


def register_backbone(
    name: str,
    factory: Callable[[str | None, int], SegmentedBackbone],
    transform: Callable[[str | None], Callable] | None = None,
) -> None:
    """Make a user backbone available to :func:`build_backbone` (and so to the CLI).

    Parameters
    ----------
    name : str
        Name to build it by; must not shadow a built-in name.
    factory : callable ``(weights, num_classes) -> SegmentedBackbone``
        ``weights`` is the user's spec (``None`` for random init); typically
        builds the model, loads weights and calls :func:`from_blocks`.
    transform : callable ``(weights) -> transform``, optional
        The eval transform for :func:`eval_transform`.
    """
    if name in SUPPORTED:
        raise ExtractError(f"backbone name {name!r} is built in; choose another name")
    _USER[name] = _Registered(factory, transform)


def available() -> tuple[str, ...]:
    """Built-in names followed by the names registered with :func:`register_backbone`."""
    return SUPPORTED + tuple(sorted(_USER))


def _check_name(name: str) -> None:
    if name not in SUPPORTED and name not in _USER:
        raise ExtractError(f"unknown backbone {name!r}; supported: {', '.join(available())}")


def _normalise(weights: str | os.PathLike | None) -> str | None:
    if weights is None:
        return None
    weights = os.fspath(weights)
    return None if weights.strip().lower() in RANDOM_SPECS else weights


def _torchvision_weights(name: str, spec: str):
    enum = resnet.weights_enum(name)
    if spec in DEFAULT_SPECS:
        return enum.DEFAULT
    member = spec.split(".", 1)[1] if spec.startswith(enum.__name__ + ".") else spec
    if member not in enum.__members__ or member == "DEFAULT":
        valid = [m for m in enum.__members__ if m != "DEFAULT"]
        raise ExtractError(
            f"unknown weights {spec!r} for {name}; use 'default', one of {valid}, or a path to a .pt/.pth file"
        )
    return enum[member]


def _timm_tag(name: str, spec: str) -> str:
    if spec in DEFAULT_SPECS:
        return convnext.default_tag(name)
    tags = convnext.pretrained_tags(name)
    tag = spec.split(".", 1)[1] if spec.startswith(name + ".") else spec
    if tag not in tags:
        raise ExtractError(
            f"unknown weights {spec!r} for {name}; use 'default', one of {list(tags)} "
            f"(classifier weights only), or a path to a .pt/.pth file"
        )
    return tag


def _load_file(model: nn.Module, segment: Callable[[nn.Module], SegmentedBackbone], path: str, target: str):
    classifier = "fc.weight" if isinstance(getattr(model, "fc", None), nn.Linear) else "head.fc.weight"
    return load_checkpoint(model, segment, path, target=target, classifier_key=classifier)


def build_backbone(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    num_classes: int = 1000,
    device: str | torch.device | None = None,
) -> SegmentedBackbone:
    """Build a supported classifier, load its weights and segment it.

    Parameters
    ----------
    name : str
        One of :data:`SUPPORTED` (or a name given to :func:`register_backbone`).
    weights : str, path or None
        See the module docstring: ``None``/``"none"`` (random), ``"default"``,
        a torchvision weights name / timm tag, or a local checkpoint path.
    num_classes : int
        Classes of the head; pretrained ImageNet weights need 1000, a local
        checkpoint must match it.
    device : str or torch.device, optional
        Where to build the model. ``"meta"`` builds shapes without memory or
        initialisation cost (random weights only), which is what MAC counting needs.

    Returns
    -------
    SegmentedBackbone
        In eval mode, with ``requires_grad`` off on every parameter (the
        backbone is frozen, paper Sec. IV-B).

    Raises
    ------
    ExtractError
        Unknown name (the message lists the supported ones), unknown weights,
        or a checkpoint of another architecture / class count.
    """
    _check_name(name)
    spec = _normalise(weights)
    if device is not None and torch.device(device).type == "meta" and spec is not None:
        raise ExtractError(f"device='meta' holds no values; use weights=None, not {spec!r}")
    if name in _USER:
        backbone = _USER[name].factory(spec, num_classes)
        if not isinstance(backbone, SegmentedBackbone):
            raise ExtractError(f"factory of backbone {name!r} returned {type(backbone).__name__}, not a SegmentedBackbone")
        if device is not None:
            backbone = backbone.to(device)
    else:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            backbone = _build_builtin(name, spec, num_classes)
    backbone.eval()
    for param in backbone.parameters():
        param.requires_grad_(False)
    return backbone


def _build_builtin(name: str, spec: str | None, num_classes: int) -> SegmentedBackbone:
    target = f"{name} with {num_classes} classes"
    pretrained = spec is not None and not looks_like_path(spec)
    if pretrained and num_classes != 1000:
        raise ExtractError(f"pretrained weights {spec!r} of {name} have 1000 classes, not num_classes={num_classes}")
    if name in resnet.RESNETS:
        model = resnet.create_resnet(name, num_classes)
        if spec is None:
            return resnet.segment_resnet(model, name)
        if pretrained:
            entry = _torchvision_weights(name, spec)
            load_state_strict(
                model,
                resnet.pretrained_state_dict(entry),
                source=f"torchvision {entry}",
                target=target,
                classifier_key="fc.weight",
            )
            return resnet.segment_resnet(model, name, weights=entry.name)
        return _load_file(model, lambda m: resnet.segment_resnet(m, name, weights=spec), spec, target)

    if spec is None or not pretrained:
        model = convnext.create_convnext(name, num_classes)
        size = tuple(convnext.pretrained_cfg(name, None)["input_size"])
        segment = lambda m: convnext.segment_convnext(m, name, size, weights=spec)  # noqa: E731
        return segment(model) if spec is None else _load_file(model, segment, spec, target)
    tag = _timm_tag(name, spec)
    model = convnext.create_convnext(name, num_classes, tag=tag, pretrained=True)
    size = tuple(convnext.pretrained_cfg(name, tag)["input_size"])
    return convnext.segment_convnext(model, name, size, weights=tag)


def eval_transform(name: str, weights: str | os.PathLike | None = None) -> Callable:
    """The preprocessing the weights were evaluated with (for ImageFolder loading).

    torchvision: ``weights.transforms()``; timm: ``resolve_data_config`` +
    ``create_transform`` of the tag's pretrained config. Random init and local
    checkpoints use the default weights' transform (ImageNet preprocessing).

    Parameters
    ----------
    name : str
        Backbone name.
    weights : str, path or None
        As for :func:`build_backbone`.

    Returns
    -------
    callable
        PIL image -> float tensor ``[3, H, W]``.
    """
    _check_name(name)
    spec = _normalise(weights)
    by_default = spec is None or looks_like_path(spec)
    if name in _USER:
        if _USER[name].transform is None:
            raise ExtractError(f"backbone {name!r} was registered without an eval transform")
        return _USER[name].transform(spec)
    if name in resnet.RESNETS:
        return _torchvision_weights(name, "DEFAULT" if by_default else spec).transforms()
    from timm.data import create_transform, resolve_data_config

    tag = None if by_default else _timm_tag(name, spec)
    config = resolve_data_config(pretrained_cfg=convnext.pretrained_cfg(name, tag))
    return create_transform(**config)
