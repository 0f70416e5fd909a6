"""Digests of what a run is made of: weights, exits, preprocessing, data, training.

These feed the provenance record (``dyce_search.provenance``) that run.json,
every cache, every recording shard and every deployed model carry. Each
digest depends on content only: tensors by name, dtype, shape and bytes
(never on the device or on how the file holding them was written), settings
by their canonical JSON.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from dyce_search.provenance import digest, make_record

from .errors import ExtractError

logger = logging.getLogger(__name__)

#: Bytes read per call when hashing data files (opt-in content identity).
_CHUNK = 1 << 20


def state_digest(state: dict | nn.Module) -> str:
    """Digest of a state dict (or a module's): every tensor's name, dtype, shape and bytes, in name order."""
    if isinstance(state, nn.Module):
        state = state.state_dict()
    parts = []
    for name in sorted(state):
        value = state[name]
        if not isinstance(value, torch.Tensor):
            parts.append({"name": name, "value": repr(value)})
            continue
        tensor = value.detach().to("cpu").contiguous()
        parts.append({"name": name, "dtype": str(tensor.dtype), "shape": list(tensor.shape)})
        # a flat uint8 view reads every dtype's bytes (bf16 included) without converting
        parts.append(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest(*parts)


def backbone_digest(backbone: nn.Module) -> str:
    """The ``backbone`` field: the backbone's weights and buffers (BatchNorm statistics included)."""
    return state_digest(backbone)


def exits_digest(bank) -> str:
    """The ``exits`` field: the exit bank's spec and weights."""
    return digest(bank.spec(), state_digest(bank))


def preprocess_digest(description: str | None) -> str:
    """The ``preprocess`` field, from the text of the evaluation transform (see :func:`describe_transform`)."""
    return digest({"preprocess": description})


def describe_transform(transform) -> str | None:
    """Readable text of a transform pipeline (torchvision's own ``repr``), None without one."""
    return None if transform is None else " ".join(repr(transform).split())


def data_identity(dataset, *, contents: bool = False) -> dict:
    """What identifies the samples of one split.

    A dataset that knows its own identity provides ``identity() -> dict``. An
    ImageFolder-like dataset (``samples`` of ``(path, class)`` and ``root``)
    is identified by its class names and the relative path and size of every
    file, or, with ``contents=True``, by every file's bytes (slower: reads the
    whole split). Anything else is identified by its type and length only,
    with a warning.

    Returns
    -------
    dict
        ``{"kind", "samples", "digest"}``; ``digest`` is what the provenance
        record stores.
    """
    if hasattr(dataset, "identity"):
        ident = dict(dataset.identity())
        return {"kind": ident.get("kind", type(dataset).__name__), "samples": len(dataset), "digest": digest(ident)}
    samples = getattr(dataset, "samples", None)
    root = getattr(dataset, "root", None)
    if samples is not None and root is not None:
        files = []
        for path, target in samples:
            try:
                entry = {"path": os.path.relpath(path, root), "class": int(target), "size": os.path.getsize(path)}
                if contents:
                    entry["sha256"] = _file_digest(path)
            except OSError as exc:
                raise ExtractError(f"cannot read {path!r} to identify the data split ({exc})") from exc
            files.append(entry)
        classes = list(getattr(dataset, "classes", []))
        kind = "files+contents" if contents else "files+sizes"
        return {"kind": kind, "samples": len(files), "digest": digest({"kind": kind, "classes": classes, "files": files})}
    logger.warning(
        "%s has no identity() and no file list: its provenance records only its type and length",
        type(dataset).__name__,
    )
    ident = {"kind": "type+length", "type": type(dataset).__qualname__, "length": len(dataset)}
    return {"kind": ident["kind"], "samples": len(dataset), "digest": digest(ident)}


def _file_digest(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def training_digest(training: dict, seed: int, train_data: str | None) -> str:
    """The ``training`` field: the exit-training settings, the seed and the training data's digest."""
    return digest({"training": training, "seed": int(seed), "data": train_data})


def cache_record(fingerprints: dict, split: str) -> dict | None:
    """The provenance record of one split's cache, from run.json's ``fingerprints``.

    None while the fingerprints are incomplete (an ``info`` built by hand,
    or exits not yet final): such a cache then carries no record.
    """
    if any(fingerprints.get(key) is None for key in ("backbone", "exits", "preprocess", "training")):
        return None
    return make_record(
        backbone=fingerprints["backbone"],
        exits=fingerprints["exits"],
        preprocess=fingerprints["preprocess"],
        training=fingerprints["training"],
        data=(fingerprints.get("data") or {}).get(split),
    )


def run_record(backbone, bank, info) -> dict:
    """The provenance record of a loaded run: digests of the weights actually loaded.

    ``preprocess`` and ``training`` come from run.json (they describe how the
    caches were made, not the weights); ``data`` is left empty: a model is not
    one split.
    """
    fingerprints = info.fingerprints or {}
    preprocess = fingerprints.get("preprocess")
    if preprocess is None and info.preprocess is not None:
        preprocess = preprocess_digest(info.preprocess)
    return make_record(
        backbone=backbone_digest(backbone), exits=exits_digest(bank), preprocess=preprocess,
        training=fingerprints.get("training"), data=None,
    )
