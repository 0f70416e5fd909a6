"""Where pretrained weights come from: torchvision weights enums or timm pretrained tags.

A family's entry in the registry table names one of the two schemes below;
each resolves a user's weights spec to a tag, creates the pretrained model and
gives the evaluation and the training transform of a tag. The two functions that download
(:func:`torchvision_state_dict`, :func:`create_timm` with ``pretrained=True``)
are the only places that reach the network; tests replace them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import ExtractError
from .checkpoint import load_state_strict

DEFAULT_SPECS = ("default", "DEFAULT")


def torchvision_state_dict(entry) -> dict:
    """Download (or read from the torch hub cache) a torchvision weights entry."""
    return entry.get_state_dict(progress=True, check_hash=True)


def create_torchvision(name: str, num_classes: int, **kwargs) -> nn.Module:
    """A randomly initialised torchvision classifier (no download)."""
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def create_timm(name: str, num_classes: int, tag: str | None = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """A timm classifier; with ``pretrained=True`` timm downloads the tag's weights."""
    import timm

    model_name = name if tag is None else f"{name}.{tag}"
    return timm.create_model(model_name, pretrained=pretrained, num_classes=num_classes, **kwargs)


def timm_tags(name: str) -> tuple[str, ...]:
    """timm's pretrained tags of ``name`` that carry an ImageNet classifier."""
    import timm
    from timm.models import get_pretrained_cfg

    tags = []
    for full in timm.list_pretrained(f"{name}.*"):
        cfg = get_pretrained_cfg(full)
        if cfg is not None and cfg.num_classes:
            tags.append(full.split(".", 1)[1])
    return tuple(tags)


def timm_input_size(model: nn.Module) -> tuple[int, ...]:
    """``(C, H, W)`` of a timm model's pretrained config (its tag's, when created with one)."""
    return tuple(model.pretrained_cfg["input_size"])


def timm_cfg(name: str, tag: str | None) -> dict:
    """timm's pretrained config (input size, mean/std, crop) as a dict."""
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(name if tag is None else f"{name}.{tag}").to_dict()


@dataclass(frozen=True)
class TorchvisionWeights:
    """torchvision weights enums (``ResNet50_Weights.IMAGENET1K_V2``): tags are enum member names."""

    library: str = "torchvision"

    def enum(self, name: str):
        import torchvision

        return torchvision.models.get_model_weights(name)

    def _entry(self, name: str, tag: str | None):
        return self.enum(name).DEFAULT if tag is None else self.enum(name)[tag]

    def resolve(self, name: str, spec: str) -> str:
        """The member name ``spec`` means for ``name``; ExtractError listing the valid ones."""
        enum = self.enum(name)
        if spec in DEFAULT_SPECS:
            return enum.DEFAULT.name
        member = spec.split(".", 1)[1] if spec.startswith(enum.__name__ + ".") else spec
        if member not in enum.__members__ or member == "DEFAULT":
            valid = [m for m in enum.__members__ if m != "DEFAULT"]
            raise ExtractError(
                f"unknown weights {spec!r} for {name}; use 'default', one of {valid}, or a path to a .pt/.pth file"
            )
        return member

    def load(self, create: Callable[..., nn.Module], name: str, tag: str, num_classes: int, classifier_key: str):
        entry = self._entry(name, tag)
        model = create(name, num_classes)
        load_state_strict(
            model, torchvision_state_dict(entry), source=f"torchvision {entry}",
            target=f"{name} with {num_classes} classes", classifier_key=classifier_key,
        )
        return model

    def transform(self, name: str, tag: str | None):
        return self._entry(name, tag).transforms()

    def train_transform(self, name: str, tag: str | None):
        """torchvision's ImageNet training recipe at the weights' own preset.

        torchvision ships no training transform with its weights, only the
        eval preset (``ImageClassification``: ``crop_size``, ``interpolation``,
        ``mean``, ``std``). Its reference training scripts
        (``references/classification/presets.py``) train at that crop size
        with ``RandomResizedCrop`` and a horizontal flip, then normalise like
        the preset; that is what this builds (paper Sec. VI-B.1: "the same
        strategy as ImageNet pre-training").
        """
        from torchvision import transforms as T

        preset = self.transform(name, tag)
        return T.Compose([
            T.RandomResizedCrop(list(preset.crop_size), interpolation=preset.interpolation, antialias=True),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(list(preset.mean), list(preset.std)),
        ])


@dataclass(frozen=True)
class TimmWeights:
    """timm pretrained tags (``convnextv2_atto.fcmae_ft_in1k``); only tags with a classifier are accepted."""

    library: str = "timm"

    def resolve(self, name: str, spec: str) -> str:
        if spec in DEFAULT_SPECS:
            from timm.models import get_pretrained_cfg

            return get_pretrained_cfg(name).tag
        tags = timm_tags(name)
        tag = spec.split(".", 1)[1] if spec.startswith(name + ".") else spec
        if tag not in tags:
            raise ExtractError(
                f"unknown weights {spec!r} for {name}; use 'default', one of {list(tags)} "
                f"(classifier weights only), or a path to a .pt/.pth file"
            )
        return tag

    def load(self, create: Callable[..., nn.Module], name: str, tag: str, num_classes: int, classifier_key: str):
        return create(name, num_classes, tag=tag, pretrained=True)

    def transform(self, name: str, tag: str | None):
        from timm.data import create_transform, resolve_data_config

        return create_transform(**resolve_data_config(pretrained_cfg=timm_cfg(name, tag)))

    def train_transform(self, name: str, tag: str | None):
        """timm's own training pipeline for the tag's data config (``create_transform(is_training=True)``).

        timm's defaults: random-resized crop at the tag's input size and
        interpolation, horizontal flip, colour jitter 0.4, the tag's mean/std.
        """
        from timm.data import create_transform, resolve_data_config

        return create_transform(**resolve_data_config(pretrained_cfg=timm_cfg(name, tag)), is_training=True)


TORCHVISION = TorchvisionWeights()
TIMM = TimmWeights()
