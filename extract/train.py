"""Distillation training of every exit on a frozen backbone (paper Sec. IV-B, VI-B.1).

One backbone pass per batch feeds all exits at all positions. The backbone
runs in eval mode under ``torch.no_grad()``; only the exits learn. Each exit
f_{n,k} minimises the soft cross-entropy to the backbone's own softmax
(Eq. 2-3), so no labels are needed. The total loss is the plain sum over
exits: exits share no parameters, so each one receives exactly the gradient
of its own L_n and the exits train independently, as in the paper.

A checkpoint (exits, optimizer, finished epochs, RNG states) is written
atomically after every epoch; calling :func:`train_exits` again with the same
checkpoint directory resumes from it. Under ``torchrun`` the exit bank is
wrapped in ``DistributedDataParallel`` (the backbone is not: it has no
gradients) and each rank trains on its share of every epoch's order.
"""

from __future__ import annotations

import json
import logging
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dyce_search._io import atomic_target

from .data import IndexedDataset, training_sampler, world
from .errors import ExtractError

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "dyce-exit-checkpoint"


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """L_n = CE(y~_n, y~_N) of Eq. 3, averaged over the batch.

    Parameters
    ----------
    logits : Tensor [B, C]
        The exit's logits y~_n (before softmax).
    target_probs : Tensor [B, C]
        The backbone's softmax y~_N (rows sum to 1).
    """
    return -(target_probs * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def exit_logits(out) -> list[tuple[int, int, torch.Tensor]]:
    """``(p, k, logits)`` for every present exit in an ``ExitBank`` output.

    Accepts the bank's nested list ``out[p][k]`` (``None`` where absent), a
    mapping ``(p, k) -> logits``, or a stacked tensor ``[P, K, B, C]``.
    """
    if isinstance(out, torch.Tensor):
        return [(p, k, out[p, k]) for p in range(out.shape[0]) for k in range(out.shape[1])]
    if isinstance(out, dict):
        return [(int(p), int(k), v) for (p, k), v in sorted(out.items()) if v is not None]
    return [(p, k, v) for p, row in enumerate(out) for k, v in enumerate(row) if v is not None]


def distillation_loss(out, head_logits: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int, float]]]:
    """Sum over exits of Eq. 3 against ``softmax(head_logits)``.

    Returns the total loss and ``(p, k, L_n)`` per exit (detached floats).
    """
    target = torch.softmax(head_logits.detach().float(), dim=-1)
    total, parts = None, []
    for p, k, logits in exit_logits(out):
        loss = soft_cross_entropy(logits, target)
        total = loss if total is None else total + loss
        parts.append((p, k, loss))
    if total is None:
        raise ExtractError("the exit bank holds no exit to train")
    return total, [(p, k, float(v.detach())) for p, k, v in parts]


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (fp16 where bf16 is unsupported); nothing on CPU.

    Returns ``(context factory, dtype or None)``.
    """
    if device.type != "cuda":
        return nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), dtype


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, then ``os.replace``.

    Every ``torch.save`` in :mod:`extract` goes through here. The archive is
    written through an open file object, never a file name: given a name,
    ``torch.save`` names the zip's inner folder after the file (here the
    random temporary name), so equal tensors gave different bytes. Through a
    file object the folder is always ``archive/`` and the rest of the zip
    (record order, the content-derived ``.data/serialization_id``, no
    timestamps) is fixed, so equal objects give byte-identical files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def _rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class TrainResult:
    """What :func:`train_exits` did.

    Attributes
    ----------
    epochs : int
        Epochs finished in total (resumed ones included).
    resumed_from : int
        Epochs already finished in the checkpoint it resumed from (0 = fresh).
    history : list of dict
        Per finished epoch: ``epoch``, ``loss`` (mean over batches of the summed
        loss), ``exit_loss`` (mean L_n per exit as nested lists [P][K], None where absent).
    """

    epochs: int
    resumed_from: int
    history: list = field(default_factory=list)


def _exit_loss_table(sums: dict, batches: int) -> list:
    if not sums:
        return []
    P = max(p for p, _ in sums) + 1
    K = max(k for _, k in sums) + 1
    return [[(sums[(p, k)] / batches if (p, k) in sums else None) for k in range(K)] for p in range(P)]


def train_exits(
    backbone: nn.Module,
    bank: nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 3e-4,
    workers: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | os.PathLike | None = None,
    fingerprint: dict | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train all exits of ``bank`` on ``backbone``'s outputs over ``dataset``.

    Parameters
    ----------
    backbone : SegmentedBackbone
        Frozen: put in eval mode, ``requires_grad`` off, run under no_grad.
    bank : ExitBank
        ``bank(features)`` maps the P early feature maps to every exit's logits.
        Trained in place (and left on ``device``).
    dataset : Dataset
        Yields ``(image, label)`` (labels are ignored) or images.
    epochs : int
        Total epochs wanted; epochs already in the checkpoint are skipped.
    batch_size, workers : int
        Per-process batch size and DataLoader workers.
    lr : float
        Adam learning rate (paper: 3e-4).
    seed : int
        Fixes the per-epoch shuffling (:func:`~extract.data.training_sampler`).
    device : str or torch.device
        ``cuda`` turns on bf16/fp16 autocast.
    checkpoint_dir : path, optional
        Holds ``last.pt``; resumed from when present, rewritten after each epoch.
    fingerprint : dict, optional
        Stored in the checkpoint and compared on resume (e.g. backbone name and
        exit-bank spec), so a checkpoint of another setup is refused.
    progress : bool
        tqdm bar per epoch (rank 0 only); each epoch's mean loss is also logged at INFO.

    Returns
    -------
    TrainResult

    Raises
    ------
    ExtractError
        The checkpoint belongs to another backbone/exit bank or is unreadable.
    """
    import torch.distributed as dist
    from tqdm.auto import tqdm

    device = torch.device(device)
    rank, world_size = world()
    # JSON round trip: tuples become lists, so the stored copy compares equal on resume
    fingerprint = json.loads(json.dumps(fingerprint or {}))
    backbone.to(device).eval()
    backbone.requires_grad_(False)
    bank.to(device).train()
    optimizer = torch.optim.Adam(bank.parameters(), lr=lr)
    autocast, dtype = autocast_for(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    start = 0
    history: list = []
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, fingerprint)
        bank.load_state_dict(ckpt["exits"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"], device)
        start, history = int(ckpt["epoch"]), list(ckpt["history"])
    resumed_from = start

    model = bank
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(bank, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = training_sampler(dataset, seed=seed, rank=rank, world_size=world_size)
    loader = DataLoader(
        IndexedDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        total, batches, sums = 0.0, 0, {}
        bar = tqdm(loader, desc=f"train epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress or rank != 0)
        for x, _label, _index in bar:
            x = x.to(device, non_blocking=True)
            with torch.no_grad(), autocast():
                features, head_logits = backbone.forward_features(x)
            with autocast():
                out = model([f.detach() for f in features])
            loss, parts = distillation_loss(out, head_logits)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            batches += 1
            for p, k, v in parts:
                sums[(p, k)] = sums.get((p, k), 0.0) + v
            bar.set_postfix(loss=f"{total / batches:.4f}", refresh=False)
        bar.close()
        entry = {"epoch": epoch + 1, "loss": total / max(batches, 1), "exit_loss": _exit_loss_table(sums, max(batches, 1))}
        history.append(entry)
        if rank == 0:
            log.info(f"epoch {epoch + 1}/{epochs}: mean distillation loss {entry['loss']:.4f}")
        if ckpt_path is not None:
            if rank == 0:
                atomic_torch_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "version": 1,
                        "epoch": epoch + 1,
                        "exits": bank.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": _rng_state(device),
                        "history": history,
                        "fingerprint": fingerprint or {},
                    },
                    ckpt_path,
                )
            if world_size > 1:
                dist.barrier()
    bank.eval()
    return TrainResult(epochs=max(epochs, start), resumed_from=resumed_from, history=history)


def load_checkpoint(path: str | os.PathLike, fingerprint: dict | None = None) -> dict:
    """Read a training checkpoint and check it belongs to ``fingerprint``.

    Raises
    ------
    ExtractError
        Unreadable file, not a DyCE exit checkpoint, or one of another setup.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one message
        raise ExtractError(f"training checkpoint {str(path)!r} is unreadable ({exc}); delete it to start over") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ExtractError(f"{str(path)!r} is not a DyCE exit-training checkpoint; delete it to start over")
    stored = ckpt.get("fingerprint") or {}
    if fingerprint:
        fingerprint = json.loads(json.dumps(fingerprint))
        for key, want in fingerprint.items():
            if key in stored and stored[key] != want:
                raise ExtractError(
                    f"training checkpoint {str(path)!r} was made for {key}={stored[key]!r}, not {want!r}; "
                    "use another --out or delete the checkpoint"
                )
    return ckpt
