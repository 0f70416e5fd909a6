"""Load a local checkpoint strictly into a model, with one clear error when it does not fit."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ExtractError

if TYPE_CHECKING:
    from .base import SegmentedBackbone

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def looks_like_path(spec: str) -> bool:
    """Whether a weights spec names a file rather than a weights tag."""
    return os.path.sep in spec or spec.endswith(CHECKPOINT_SUFFIXES) or os.path.exists(spec)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a ``.pt``/``.pth`` file.

    Accepts a bare state dict or a dict holding it under ``"state_dict"`` or
    ``"model"``; strips the ``"module."`` prefix that ``DataParallel`` adds.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ExtractError(f"weights file {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable for whatever reason: one clear message
        raise ExtractError(f"weights file {path!r} is not a readable PyTorch checkpoint: {exc}") from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ExtractError(
            f"weights file {path!r} holds no state dict (expected a dict of tensors, or one under 'state_dict'/'model')"
        )
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_state_strict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    target: str,
    classifier_key: str | None = None,
) -> None:
    """``model.load_state_dict(state, strict=True)`` with a diagnosis instead of a wall of keys.

    Parameters
    ----------
    model : nn.Module
        Receives the weights.
    state : mapping
        The state dict to load.
    source : str
        Where ``state`` comes from (a path), for the message.
    target : str
        What ``model`` is (e.g. ``"resnet50 with 1000 classes"``), for the message.
    classifier_key : str, optional
        Key of the classifier weight (e.g. ``"fc.weight"``); a shape mismatch
        there only is reported as a class-count mismatch.

    Raises
    ------
    ExtractError
        Keys missing or unexpected (another architecture) or shapes that differ.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ExtractError(
            f"weights file {source!r} belongs to another architecture than {target}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    wrong = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if classifier_key is not None and classifier_key in wrong:
        got = state[classifier_key].shape[0]
        raise ExtractError(
            f"weights file {source!r} has {got} classes ({classifier_key} {tuple(state[classifier_key].shape)}), "
            f"but {target}; pass num_classes={got}"
        )
    if wrong:
        k = wrong[0]
        raise ExtractError(
            f"weights file {source!r} belongs to another architecture than {target}: "
            f"{len(wrong)} tensors differ in shape, e.g. {k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        )
    model.load_state_dict(state, strict=True)


def load_checkpoint(
    model: nn.Module,
    segment: Callable[[nn.Module], SegmentedBackbone],
    path: str | os.PathLike,
    *,
    target: str,
    classifier_key: str | None = None,
) -> SegmentedBackbone:
    """Load a checkpoint of the original model or of its segmented form, then segment.

    A state dict whose keys start with ``"segments."`` (what
    ``SegmentedBackbone.state_dict()`` saves) is loaded into ``segment(model)``;
    any other into ``model`` before segmenting. Both loads are strict.

    Parameters
    ----------
    model : nn.Module
        The freshly built original model.
    segment : callable ``model -> SegmentedBackbone``
        The adapter (e.g. a closure over :func:`from_blocks`).
    path : str or PathLike
        The ``.pt``/``.pth`` file.
    target : str
        What the model is, for error messages (``"resnet50 with 1000 classes"``).
    classifier_key : str, optional
        Key of the classifier weight in the *original* model's state dict
        (``"fc.weight"``); the segmented key is found as the head's last Linear.

    Raises
    ------
    ExtractError
        Missing file, unreadable file, another architecture or class count.
    """
    source = os.fspath(path)
    state = read_state_dict(source)
    if any(k.startswith("segments.") for k in state):
        backbone = segment(model)
        load_state_strict(backbone, state, source=source, target=target, classifier_key=_head_classifier(backbone))
        return backbone
    load_state_strict(model, state, source=source, target=target, classifier_key=classifier_key)
    return segment(model)


def _head_classifier(backbone: SegmentedBackbone) -> str | None:
    """State-dict key of the weight of the head's last Linear layer, if any."""
    names = [name for name, m in backbone.head.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        return None
    return "head.weight" if names[-1] == "" else f"head.{names[-1]}.weight"
