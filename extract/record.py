"""Record every exit's top-1 prediction and confidence on one data split.

Each batch goes once through the backbone (keeping the P early feature maps)
and once through every exit of the bank. Per sample we keep, for every exit
(p, k) and for the head, the top-1 class and the top-1 softmax probability
(the paper's max(y~_{n,k}), Sec. III-A.3), softmax taken in float32.

Long runs are cut into shards of consecutive dataset indices. Each finished
shard is written atomically as ``shard-{first:010d}-{stop:010d}.npz`` in a
shard folder; a rerun skips the indices the shards already cover, so a killed
run resumes with no lost and no duplicated rows. Under ``torchrun`` each rank
records its share of a shard, rank 0 gathers, deduplicates and writes it; the
result is the same as a single-process run's.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dyce_search._io import atomic_target

from .data import ChunkSampler, IndexedDataset, world
from .errors import ExtractError
from .runtime import top1  # the confidence max(y~) of dyce_search.exit_rule, shared with the run-time model
from .train import autocast_for, exit_logits

log = logging.getLogger(__name__)

SHARD_RE = re.compile(r"^shard-(\d{10})-(\d{10})\.npz$")
ARRAYS = ("sample", "label", "pred", "conf", "final_pred", "final_conf")


@dataclass
class Recording:
    """The recorded outputs of one split, rows in dataset-index order.

    Attributes
    ----------
    sample : int64 [M]
        Dataset index of each row.
    label : int32 [M]
        Ground truth, -1 where the dataset has none.
    pred : int32 [P, K, M]
        Top-1 class of exit (p, k); -1 where the bank has no such exit.
    conf : float32 [P, K, M]
        Top-1 softmax probability of exit (p, k); NaN where absent.
    final_pred : int32 [M]
        Top-1 class of the head (f_{N,1}).
    final_conf : float32 [M]
        Top-1 softmax probability of the head.
    """

    sample: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    conf: np.ndarray
    final_pred: np.ndarray
    final_conf: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence["Recording"]) -> "Recording":
        if not parts:
            raise ExtractError("nothing was recorded (empty dataset)")
        return cls(
            sample=np.concatenate([r.sample for r in parts]),
            label=np.concatenate([r.label for r in parts]),
            pred=np.concatenate([r.pred for r in parts], axis=2),
            conf=np.concatenate([r.conf for r in parts], axis=2),
            final_pred=np.concatenate([r.final_pred for r in parts]),
            final_conf=np.concatenate([r.final_conf for r in parts]),
        )

    def take(self, rows: np.ndarray) -> "Recording":
        return Recording(
            self.sample[rows], self.label[rows], self.pred[:, :, rows], self.conf[:, :, rows],
            self.final_pred[rows], self.final_conf[rows],
        )

    def save(self, path: str | os.PathLike, fingerprint: str = "") -> None:
        """Write as ``.npz`` atomically (temp file in the same folder, then ``os.replace``).

        ``fingerprint`` (see :func:`extract.pipeline.shard_fingerprint`) is
        stored beside the arrays, so that a resumed recording can tell its own
        shards from those of other exits or other data.
        """
        with atomic_target(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{name: getattr(self, name) for name in ARRAYS}, fingerprint=np.array(fingerprint))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recording":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(**{name: z[name] for name in ARRAYS})
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ExtractError(f"shard {os.fspath(path)!r} is unreadable ({exc}); delete it to re-record its rows") from exc


def shard_fingerprint_of(path: Path) -> str | None:
    """The fingerprint stored in a shard (None for shards written before fingerprints existed).

    Reads the small ``fingerprint`` member only, and checks that every array
    member is there and the archive's table of contents is whole.

    Raises
    ------
    ExtractError
        The shard is truncated or otherwise unreadable, naming it.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [name for name in ARRAYS if name not in z.files]
            if missing:
                raise ExtractError(f"shard {str(path)!r} lacks {missing}; delete it to re-record its rows")
            return str(z["fingerprint"]) if "fingerprint" in z.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ExtractError(f"shard {str(path)!r} is unreadable ({exc}); delete it to re-record its rows") from exc


def record_batch(backbone: nn.Module, bank: nn.Module, x: torch.Tensor, available: np.ndarray, autocast) -> tuple:
    """One backbone pass and every exit on a batch: ``(pred [P,K,B], conf [P,K,B], final_pred [B], final_conf [B])``."""
    P, K = available.shape
    B = x.shape[0]
    pred = np.full((P, K, B), -1, np.int32)
    conf = np.full((P, K, B), np.nan, np.float32)
    with torch.no_grad(), autocast():
        features, head_logits = backbone.forward_features(x)
        out = bank(features)
    items = exit_logits(out)
    seen = np.zeros_like(available)
    for p, k, _ in items:
        if not available[p, k]:
            raise ExtractError(f"the exit bank produced exit ({p}, {k}) that its layout marks absent")
        seen[p, k] = True
    if not np.array_equal(seen, available):
        missing = [tuple(map(int, pk)) for pk in np.argwhere(available & ~seen)]
        raise ExtractError(f"the exit bank produced no output for exits {missing[:5]}")
    if items:
        # one softmax over all exits at once: per-exit small ops would dominate for cheap exits
        pk, ck = top1(torch.stack([logits for _, _, logits in items]))
        ps = np.array([p for p, _, _ in items])
        ks = np.array([k for _, k, _ in items])
        pred[ps, ks] = pk.cpu().numpy()
        conf[ps, ks] = ck.cpu().numpy()
    fp, fc = top1(head_logits)
    return pred, conf, fp.cpu().numpy(), fc.cpu().numpy()


def completed_shards(shard_dir: Path, n: int, fingerprint: str | None = None) -> tuple[list[Path], int]:
    """Shard files in ``shard_dir`` and the dataset index where the next one starts.

    With ``fingerprint``, shards that carry another one (recorded with other
    exits or from other data, or before shards carried one) are deleted, never
    merged, and the rows they held are recorded again. Shards must tile
    ``[0, stop)`` without gaps or overlaps; anything else is reported rather
    than silently re-recorded, as is a shard that cannot be read. Discarded
    shards are logged at INFO.
    """
    shards = []
    stale = []
    for path in shard_dir.glob("shard-*.npz"):
        m = SHARD_RE.match(path.name)
        if not m:
            continue
        if fingerprint is not None and shard_fingerprint_of(path) != fingerprint:
            stale.append(path)
            continue
        shards.append((int(m.group(1)), int(m.group(2)), path))
    if stale:
        for path in stale:
            path.unlink()
        log.info(f"discarded {len(stale)} stale recording shard(s) in {shard_dir} (other exits, data or release)")
    shards.sort()
    stop = 0
    for first, end, path in shards:
        if first != stop or end <= first or end > n:
            raise ExtractError(
                f"shard folder {str(shard_dir)!r} does not tile the dataset of {n} samples "
                f"({path.name} after index {stop}); delete the folder to record from scratch"
            )
        stop = end
    return [p for _, _, p in shards], stop


def _gather(part: Recording, world_size: int) -> list[Recording]:
    if world_size == 1:
        return [part]
    import torch.distributed as dist

    out = [None] * world_size
    dist.all_gather_object(out, part)
    return out


def _merge(parts: list[Recording], first: int, stop: int) -> Recording:
    rec = Recording.concat(parts)
    samples, rows = np.unique(rec.sample, return_index=True)
    if not np.array_equal(samples, np.arange(first, stop)):
        raise ExtractError(f"recording of samples {first}..{stop - 1} came back incomplete")
    return rec.take(rows)


def record_split(
    backbone: nn.Module,
    bank: nn.Module,
    dataset: Dataset,
    available: np.ndarray,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
    shard_dir: str | os.PathLike | None = None,
    shard_size: int = 10_000,
    progress: bool = True,
    desc: str = "record",
    fingerprint: str | None = None,
) -> Recording | None:
    """Run ``dataset`` in order through the backbone and every exit.

    Parameters
    ----------
    backbone : SegmentedBackbone
        Frozen; run in eval mode under no_grad.
    bank : ExitBank
        Every exit; ``bank(features)`` gives each exit's logits.
    dataset : Dataset
        Yields ``(image, label)``; sample ids are the dataset indices.
    available : bool [P, K]
        Which exits the bank holds.
    batch_size, workers : int
        Per process.
    device : str or torch.device
        ``cuda`` turns on bf16/fp16 autocast.
    shard_dir : path, optional
        Folder for the resumable shards (created). Without it, nothing is
        written and the run cannot resume.
    shard_size : int
        Samples per shard.
    progress : bool
        tqdm bar (rank 0).
    fingerprint : str, optional
        Stored in every shard; shards found with another one are discarded
        (see :func:`completed_shards`). Without it, any shard is resumed.

    Returns
    -------
    Recording or None
        All rows in dataset-index order on rank 0, None on other ranks. The
        shards stay in ``shard_dir``; :func:`remove_shards` deletes them once
        the final cache is written.
    """
    from tqdm.auto import tqdm

    import torch.distributed as dist

    device = torch.device(device)
    rank, world_size = world()
    available = np.asarray(available, bool)
    backbone.to(device).eval()
    bank.to(device).eval()
    autocast, _ = autocast_for(device)
    n = len(dataset)
    if n == 0:
        raise ExtractError("cannot record an empty dataset")

    done_paths, start = [], 0
    if shard_dir is not None:
        shard_dir = Path(shard_dir)
        if rank == 0:
            # rank 0 alone discards stale shards; the others read the folder once it is clean
            shard_dir.mkdir(parents=True, exist_ok=True)
            done_paths, start = completed_shards(shard_dir, n, fingerprint)
        if world_size > 1:
            dist.barrier()
        if rank != 0:
            done_paths, start = completed_shards(shard_dir, n, fingerprint)
    sampler = ChunkSampler(start, n, shard_size if shard_dir is not None else n, rank=rank, world_size=world_size)
    loader = DataLoader(
        IndexedDataset(dataset), batch_size=batch_size, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    chunks = sampler.chunks()
    finished: list[Recording] = []
    pending: list[Recording] = []
    pending_rows = 0
    c = 0
    bar = tqdm(total=n, initial=start, desc=desc, unit="img", disable=not progress or rank != 0)
    for x, label, index in loader:
        pred, conf, fp, fc = record_batch(backbone, bank, x.to(device, non_blocking=True), available, autocast)
        batch = Recording(
            index.numpy().astype(np.int64), label.numpy().astype(np.int32), pred, conf, fp, fc
        )
        # a batch can straddle chunk boundaries: split it at each one
        offset = 0
        while offset < len(batch.sample):
            need = sampler.per_rank(*chunks[c]) - pending_rows
            piece = batch.take(np.arange(offset, min(offset + need, len(batch.sample))))
            pending.append(piece)
            pending_rows += len(piece.sample)
            offset += len(piece.sample)
            if pending_rows == sampler.per_rank(*chunks[c]):
                first, stop = chunks[c]
                merged = _gather(Recording.concat(pending), world_size)
                if rank == 0:
                    shard = _merge(merged, first, stop)
                    if shard_dir is not None:
                        shard.save(shard_dir / f"shard-{first:010d}-{stop:010d}.npz", fingerprint or "")
                    finished.append(shard)
                    bar.update(stop - first)
                pending, pending_rows, c = [], 0, c + 1
    bar.close()
    if world_size > 1:
        dist.barrier()
    if rank != 0:
        return None
    earlier = [Recording.load(p) for p in done_paths]
    return Recording.concat(earlier + finished)


def remove_shards(shard_dir: str | os.PathLike) -> None:
    """Delete the shard files and then the folder (once the final cache is in place)."""
    shard_dir = Path(shard_dir)
    if not shard_dir.is_dir():
        return
    for path in shard_dir.glob("shard-*.npz"):
        path.unlink()
    for path in shard_dir.glob(".shard-*.tmp"):
        path.unlink()
    try:
        shard_dir.rmdir()
    except OSError:
        pass
