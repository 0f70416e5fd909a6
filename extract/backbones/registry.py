"""Backbones by name: ``build_backbone(name, weights)``, ``eval_transform(name, weights)``, ``train_transform``.

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

from ..errors import ExtractError
from .base import SegmentedBackbone
from .checkpoint import load_checkpoint, looks_like_path
from .families import BY_NAME, FAMILIES

SUPPORTED: tuple[str, ...] = tuple(name for family in FAMILIES for name in family.names)
"""Names of the built-in backbones, family by family (see ``families.FAMILIES``)."""

RANDOM_SPECS = ("none", "random", "")


DEFAULT_NUM_CLASSES = 1000
"""Classes of a built-in backbone unless told otherwise: ImageNet's, those of its pretrained weights."""
DEFAULT_EXIT_TYPES = "paper"
"""Exit types of a backbone unless told otherwise: the paper's five (``extract.exits.PAPER_EXIT_TYPES``)."""

#: Names registered by a module of this package, imported on first use (importing them costs data loading).
REGISTERING_MODULES: dict[str, str] = {"digits": "extract.digits"}


@dataclass(frozen=True)
class Defaults:
    """What ``python -m extract NAME`` uses when the user does not say.

    Attributes
    ----------
    num_classes : int
        Classes of the model (``--macs``; pretrained weights).
    exit_types : str
        ``--exit-types``.
    out : str or None
        Run directory; ``None`` means ``runs/NAME``.
    demo : callable ``(out, *, exit_epochs, backbone_epochs, batch_size, seed, progress)``, optional
        A backbone that brings its own data and training (the digits demo):
        ``python -m extract NAME`` runs it instead of extracting from ``--data``.
    """

    num_classes: int = DEFAULT_NUM_CLASSES
    exit_types: str = DEFAULT_EXIT_TYPES
    out: str | None = None
    demo: Callable[..., object] | None = None


@dataclass(frozen=True)
class _Registered:
    factory: Callable[[str | None, int], SegmentedBackbone]
    transform: Callable[[str | None], Callable] | None
    defaults: Defaults
    train_transform: Callable[[str | None], Callable] | None = None


_USER: dict[str, _Registered] = {}


def register_backbone(
    name: str,
    factory: Callable[[str | None, int], SegmentedBackbone],
    transform: Callable[[str | None], Callable] | None = None,
    *,
    num_classes: int = DEFAULT_NUM_CLASSES,
    exit_types: str = DEFAULT_EXIT_TYPES,
    out: str | None = None,
    demo: Callable[..., object] | None = None,
    train_transform: Callable[[str | None], Callable] | None = None,
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
    num_classes : int
        Its class count where none is given (``python -m extract NAME --macs``).
    exit_types : str
        Its exit types where none are given (``--exit-types``), e.g. ``"mlp1,mlp2x32"``.
    out, demo
        Its default run directory and its demo command (see :class:`Defaults`).
    train_transform : callable ``(weights) -> transform``, optional
        The training augmentation for :func:`train_transform`; without it the
        exits of this backbone can only be trained with ``--no-augment``.
    """
    if name in SUPPORTED:
        raise ExtractError(f"backbone name {name!r} is built in; choose another name")
    _USER[name] = _Registered(factory, transform, Defaults(int(num_classes), str(exit_types), out, demo), train_transform)


def available() -> tuple[str, ...]:
    """Built-in names followed by the registered names (and those a module of this package registers)."""
    return SUPPORTED + tuple(sorted(set(_USER) | set(REGISTERING_MODULES)))


def _check_name(name: str) -> None:
    if name not in SUPPORTED and name not in _USER and name in REGISTERING_MODULES:
        import importlib

        importlib.import_module(REGISTERING_MODULES[name])
    if name not in SUPPORTED and name not in _USER:
        raise ExtractError(f"unknown backbone {name!r}; supported: {', '.join(available())}")


def defaults(name: str) -> Defaults:
    """What ``python -m extract NAME`` uses unless told otherwise (built-in backbones: ImageNet, the paper's exits)."""
    _check_name(name)
    return _USER[name].defaults if name in _USER else Defaults()


def _normalise(weights: str | os.PathLike | None) -> str | None:
    if weights is None:
        return None
    weights = os.fspath(weights)
    return None if weights.strip().lower() in RANDOM_SPECS else weights


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
    family = BY_NAME[name]
    if spec is None:
        return family.segment(family.create(name, num_classes), name)
    target = f"{name} with {num_classes} classes"
    if looks_like_path(spec):
        segment = lambda m: family.segment(m, name, weights=spec)  # noqa: E731
        return load_checkpoint(
            family.create(name, num_classes), segment, spec, target=target, classifier_key=family.classifier_key
        )
    if num_classes != 1000:
        raise ExtractError(f"pretrained weights {spec!r} of {name} have 1000 classes, not num_classes={num_classes}")
    tag = family.weights.resolve(name, spec)
    model = family.weights.load(family.create, name, tag, num_classes, family.classifier_key)
    return family.segment(model, name, weights=tag)


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
    scheme = BY_NAME[name].weights
    return scheme.transform(name, None if by_default else scheme.resolve(name, spec))


def train_transform(name: str, weights: str | os.PathLike | None = None, *, augment: bool = True) -> Callable:
    """The training pipeline of the exits (paper Sec. VI-B.1: the weights' ImageNet pre-training augmentation).

    Where it comes from is the family's weights scheme
    (:data:`extract.backbones.families.FAMILIES`): timm families use timm's
    ``create_transform(**resolve_data_config(cfg), is_training=True)``,
    torchvision families torchvision's reference recipe at the weights'
    preset (:meth:`~extract.backbones.pretrained.TorchvisionWeights.train_transform`);
    a registered backbone uses the ``train_transform`` it was registered with.
    Random init and local checkpoints use the default weights' pipeline, as
    for :func:`eval_transform`. ``augment=False`` is the eval transform itself.

    Raises
    ------
    ExtractError
        Unknown name or weights, or a registered backbone without a training
        transform (asked with ``augment=True``).
    """
    if not augment:
        return eval_transform(name, weights)
    _check_name(name)
    spec = _normalise(weights)
    if name in _USER:
        if _USER[name].train_transform is None:
            raise ExtractError(
                f"backbone {name!r} was registered without a training transform; pass train_transform= to "
                "register_backbone, or train on eval-transformed images (--no-augment)"
            )
        return _USER[name].train_transform(spec)
    scheme = BY_NAME[name].weights
    by_default = spec is None or looks_like_path(spec)
    return scheme.train_transform(name, None if by_default else scheme.resolve(name, spec))
