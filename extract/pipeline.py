"""The extraction pipeline behind ``python -m extract``: train exits, count MACs, record caches.

Every step is skipped when its output already stands in the run directory, and
the two long steps resume from their own partial state (training from the
epoch checkpoint, recording from its shards), so rerunning the same command
after a kill continues where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import ExtractError
from .rundir import RunDir, RunInfo, check_positions, save_backbone, write_text_atomic


@dataclass
class Settings:
    """Knobs of one pipeline run.

    Attributes
    ----------
    epochs : int
        Exit-training epochs.
    batch_size : int
        Per-process batch size (training and recording).
    lr : float
        Adam learning rate (paper: 3e-4).
    workers : int
        DataLoader workers per process.
    seed : int
        Seeds the exit initialisation and the per-epoch shuffling.
    device : str
        ``cpu``, ``cuda`` or ``cuda:N``.
    shard_size : int
        Samples per recording shard.
    progress : bool
        tqdm bars and log lines (rank 0).
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-4
    workers: int = 0
    seed: int = 0
    device: str = "cpu"
    shard_size: int = 10_000
    progress: bool = True


def _rank() -> tuple[int, int]:
    from .data import world

    return world()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def cache_metadata(info: RunInfo, split: str, bank, macs) -> dict:
    """The ``dyce`` metadata of one split's cache (ExitCache fills the derived keys)."""
    return {
        "backbone": info.backbone,
        "weights": info.weights,
        "dataset": info.dataset,
        "split": split,
        "positions": [dict(p) for p in info.positions],
        "exit_types": [t.to_dict() for t in bank.types],
        "input_size": list(info.input_size),
        "segment_macs": macs.segment_macs.tolist(),
        "seed": info.seed,
        "training": info.training,
        "run_created": info.created,
    }


def to_cache(recording, info: RunInfo, split: str, bank, macs, sample_ids: np.ndarray | None = None):
    """Build the ``dyce_search.ExitCache`` of one recorded split."""
    from dyce_search import ExitCache

    sample = recording.sample if sample_ids is None else np.asarray(sample_ids, np.int64)[recording.sample]
    return ExitCache(
        label=recording.label,
        pred=recording.pred,
        conf=recording.conf,
        final_pred=recording.final_pred,
        final_conf=recording.final_conf,
        backbone_macs=macs.backbone_macs,
        exit_macs=macs.exit_macs,
        available=bank.available,
        total_macs=macs.total_macs,
        positions=tuple(p["name"] for p in info.positions),
        exit_types=bank.exit_types,
        sample=sample,
        num_classes=info.num_classes,
        metadata=cache_metadata(info, split, bank, macs),
    )


def _same_run(old: RunInfo, new: RunInfo, where: str) -> None:
    for key in ("backbone", "weights", "num_classes", "input_size", "positions", "exits", "dataset"):
        a, b = json.loads(json.dumps(getattr(old, key))), json.loads(json.dumps(getattr(new, key)))
        if a != b:
            raise ExtractError(
                f"{where} holds a run with {key}={a!r}, not {b!r}; choose another --out or delete that directory"
            )


def run_pipeline(
    out: str | os.PathLike,
    backbone,
    bank,
    *,
    train_data: Dataset | None,
    splits: Mapping[str, Dataset],
    info: RunInfo,
    settings: Settings,
    log: Callable[[str], None] = print,
):
    """Train the exits (unless ``exits.pt`` exists), count MACs and record every split.

    Parameters
    ----------
    out : path
        The run directory (created).
    backbone : SegmentedBackbone
        Frozen backbone.
    bank : ExitBank
        Freshly initialised exits (replaced by ``exits.pt`` when present).
    train_data : Dataset or None
        Training data for the exits; only needed when ``exits.pt`` is absent.
    splits : mapping split name -> Dataset
        Splits to record, in order; a dataset's optional ``sample_ids`` array
        maps dataset indices to the ids stored in the cache.
    info : RunInfo
        Written to ``run.json`` (or checked against the one there).
    settings : Settings
    log : callable
        Receives log lines (rank 0 only); pass a no-op to silence them.

    Returns
    -------
    dict split -> pathlib.Path
        The cache written (or found) per split.
    """
    from .exits import ExitBank
    from .macs import macs_table
    from .record import record_split, remove_shards
    from .train import train_exits

    rank, _world = _rank()
    say = log if rank == 0 else (lambda _msg: None)
    run = RunDir(out)
    if rank == 0:
        run.path.mkdir(parents=True, exist_ok=True)
        if run.run_json.is_file():
            old = RunInfo.load(run.run_json)
            _same_run(old, info, str(run.path))
            splits_union = tuple(dict.fromkeys([*old.splits, *info.splits]))
            info = RunInfo(**{**info.__dict__, "created": old.created, "splits": splits_union})
        info.save(run.run_json)
        if info.backbone_file and not run.backbone.is_file():
            save_backbone(run.backbone, backbone)
    _barrier()
    info = RunInfo.load(run.run_json)
    check_positions(backbone, info.positions, str(run.run_json))

    if run.exits.is_file():
        say(f"exits: using trained exits in {run.exits}")
        bank = ExitBank.load(run.exits)
    else:
        if train_data is None:
            raise ExtractError(f"{str(run.path)!r} holds no trained exits and no training data was given")
        say(f"exits: training {sum(1 for _ in bank.exits())} exits for {settings.epochs} epochs on {len(train_data)} samples")
        train_exits(
            backbone, bank, train_data,
            epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, workers=settings.workers,
            seed=settings.seed, device=settings.device, checkpoint_dir=run.checkpoints,
            fingerprint={"backbone": info.backbone, "weights": info.weights, "exits": info.exits},
            progress=settings.progress, log=say,
        )
        bank.to("cpu")
        if rank == 0:
            bank.save(run.exits)
        _barrier()

    macs = macs_table(backbone.to("cpu"), bank.to("cpu"))
    if rank == 0:
        write_text_atomic(run.macs, macs.to_json() + "\n")
        say(f"macs: {macs.total_macs / 1e6:.2f} MMACs per image; table in {run.macs}")

    written = {}
    for split, dataset in splits.items():
        target = run.cache(split)
        if target.is_file():
            say(f"{split}: cache exists, skipping ({target})")
            written[split] = target
            continue
        recording = record_split(
            backbone, bank, dataset, bank.available,
            batch_size=settings.batch_size, workers=settings.workers, device=settings.device,
            shard_dir=run.shards(split), shard_size=settings.shard_size, progress=settings.progress,
            desc=f"record {split}",
        )
        if rank == 0:
            cache = to_cache(recording, info, split, bank.to("cpu"), macs, getattr(dataset, "sample_ids", None))
            cache.write(target)
            remove_shards(run.shards(split))
            say(f"{split}: {cache.n_samples} samples, {_accuracy_text(cache)} -> {target}")
        _barrier()
        written[split] = target
    backbone.to("cpu")
    bank.to("cpu")
    return written


def _accuracy_text(cache) -> str:
    """The head's A_ori (Eq. 10) as searches will use it, or why there is none."""
    from dyce_search.objective import reference

    ref = reference(cache)
    if ref.labels_known:
        return f"head accuracy {ref.head_accuracy:.4f}"
    return "labels incomplete (searches measure agreement with the head)"


def seeded_bank(backbone, exit_types, seed: int):
    """A fresh ExitBank whose initial weights depend only on ``seed``."""
    from .exits import ExitBank

    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return ExitBank(backbone.positions, exit_types, backbone.num_classes)
    finally:
        torch.set_rng_state(state)
