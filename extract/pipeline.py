"""The extraction pipeline behind ``python -m extract``: train exits, count MACs, record caches.

Every step is skipped when its output already stands in the run directory, and
the two long steps resume from their own partial state (training from the
epoch checkpoint, recording from its shards), so rerunning the same command
after a kill continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from dyce_search.provenance import FIELDS, MODEL_FIELDS, run_fingerprint

from .errors import ExtractError
from .fingerprint import (
    backbone_digest, cache_record, data_identity, describe_transform, exits_digest, preprocess_digest,
    training_digest,
)
from .rundir import RunDir, RunInfo, check_positions, save_backbone, write_text_atomic

log = logging.getLogger(__name__)


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
    hash_data : bool
        Identify each data split by the bytes of its files rather than by
        their paths and sizes (reads every file once more).
    keep_checkpoints : bool
        Keep ``checkpoints/`` (the exits' training state, with the optimizer's)
        once ``exits.pt`` is final; by default it is removed then.
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-4
    workers: int = 0
    seed: int = 0
    device: str = "cpu"
    shard_size: int = 10_000
    progress: bool = True
    hash_data: bool = False
    keep_checkpoints: bool = False


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
        "preprocess": info.preprocess,
        "run_created": info.created,
        **({"provenance": record} if (record := cache_record(info.fingerprints, split)) else {}),
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


#: run.json fields a rerun must repeat: they make the run what it is. Training
#: settings and the seed count even when the exits already exist, because the
#: caches' metadata describes them.
_IDENTITY_FIELDS = (
    "backbone", "weights", "num_classes", "input_size", "positions", "exits", "dataset", "seed", "training",
    "preprocess",
)


def _plain(value):
    return json.loads(json.dumps(value))


def _refuse_rerun(where: str, what: str, recorded, given) -> ExtractError:
    return ExtractError(
        f"{where} holds a run made with {what}={recorded!r}, but this command gives {given!r}; a run folder holds "
        "one run: repeat the recorded settings (see its run.json) or choose another --out"
    )


def _same_run(old: RunInfo, new: RunInfo, where: str) -> None:
    """Refuse a rerun whose settings or backbone weights differ from the recorded run."""
    for key in _IDENTITY_FIELDS:
        a, b = _plain(getattr(old, key)), _plain(getattr(new, key))
        if key == "preprocess" and a is None:
            continue  # recorded before run.json described the preprocessing
        if key == "training" and isinstance(a, dict) and isinstance(b, dict) and "transform" not in a:
            b = {k: v for k, v in b.items() if k != "transform"}  # recorded before run.json named the training transform
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                sub = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
                raise _refuse_rerun(where, f"{key}.{sub}", a.get(sub), b.get(sub))
            raise _refuse_rerun(where, key, a, b)
    mine, theirs = old.fingerprints, new.fingerprints
    if mine.get("data_identity") not in (None, theirs.get("data_identity")):
        raise _refuse_rerun(where, "data identified by", mine["data_identity"], theirs.get("data_identity"))
    if mine.get("backbone") and mine["backbone"] != theirs.get("backbone"):
        raise ExtractError(
            f"{where} holds a run whose backbone weights differ from the ones this command builds "
            f"(digest {mine['backbone'][:12]} vs {theirs.get('backbone', '')[:12]}): the weights file changed, "
            "or random weights came from another seed; choose another --out"
        )


def _merge_rerun(old: RunInfo, new: RunInfo, run: RunDir) -> RunInfo:
    """The run.json of a rerun: the recorded run, its fingerprints completed and the new splits added."""
    fingerprints = dict(old.fingerprints)
    data = dict(fingerprints.get("data") or {})
    for split, value in (new.fingerprints.get("data") or {}).items():
        if split in data and data[split] != value and run.cache(split).is_file():
            raise ExtractError(
                f"{str(run.cache(split))!r} was recorded from other data than {new.dataset}/{split} holds now "
                f"(files or sizes changed: digest {data[split][:12]} vs {value[:12]}); delete that cache to "
                "re-record it, or choose another --out"
            )
        data[split] = value
    fingerprints["data"] = data
    for key in ("backbone", "preprocess"):
        fingerprints.setdefault(key, new.fingerprints.get(key))
    if new.fingerprints.get("training") is not None:
        if fingerprints.get("training") not in (None, new.fingerprints["training"]):
            raise ExtractError(
                f"{str(run.path)!r} holds exits trained on other data than {new.dataset}/{new.training.get('split')} "
                f"holds now (training digest {fingerprints['training'][:12]} vs {new.fingerprints['training'][:12]}); "
                "choose another --out"
            )
        fingerprints["training"] = new.fingerprints["training"]
    splits = tuple(dict.fromkeys([*old.splits, *new.splits]))
    preprocess = old.preprocess if old.preprocess is not None else new.preprocess
    return RunInfo(**{**old.__dict__, "splits": splits, "preprocess": preprocess, "fingerprints": fingerprints})


def _fingerprinted(info: RunInfo, backbone, train_data, splits: Mapping, hash_data: bool, say) -> RunInfo:
    """``info`` with the digests of the backbone, the preprocessing and every data split."""
    transforms = {describe_transform(getattr(d, "transform", None)) for d in splits.values()}
    if len(transforms) > 1:
        raise ExtractError(f"the splits to record use different transforms: {sorted(map(str, transforms))}")
    preprocess = info.preprocess if info.preprocess is not None else next(iter(transforms), None)
    if splits:
        say(f"identifying the data ({'file contents' if hash_data else 'file names and sizes'})")
    identities = {split: data_identity(d, contents=hash_data) for split, d in splits.items()}
    if train_data is not None:
        train = data_identity(train_data, contents=hash_data)
    kinds = {ident["kind"] for ident in identities.values()} | ({train["kind"]} if train_data is not None else set())
    fingerprints = {
        "backbone": backbone_digest(backbone),
        "preprocess": preprocess_digest(preprocess),
        "data": {split: ident["digest"] for split, ident in identities.items()},
        # how the splits were identified: digests of two kinds never match, so a change is named as such
        "data_identity": "+".join(sorted(kinds)) or None,
    }
    if train_data is not None:
        fingerprints["training"] = training_digest(info.training, info.seed, train["digest"])
    return RunInfo(**{**info.__dict__, "preprocess": preprocess, "fingerprints": fingerprints})


def _with_exits(info: RunInfo, bank) -> RunInfo:
    """``info`` with the ``exits`` and ``run`` fingerprints of the final exits."""
    fingerprints = dict(info.fingerprints)
    fingerprints["exits"] = exits_digest(bank)
    if fingerprints.get("training") is None:
        # exits.pt was there before any run.json described its training data
        fingerprints["training"] = training_digest(info.training, info.seed, None)
    fingerprints["run"] = run_fingerprint(fingerprints)
    return RunInfo(**{**info.__dict__, "fingerprints": fingerprints})


def _check_recorded_caches(run: RunDir, info: RunInfo) -> None:
    """Refuse when a cache in the run folder was recorded by other weights, exits or preprocessing."""
    from dyce_search import ExitCache

    current = cache_record(info.fingerprints, "")
    for split, path in run.caches().items():
        record = ExitCache.read_metadata(path).get("provenance")
        if record is None:
            raise ExtractError(
                f"{str(path)!r} has no provenance record (recorded by an older release), so nothing shows it was "
                f"recorded with this run's exits; delete it to re-record it, or choose another --out"
            )
        for key in MODEL_FIELDS:
            if record.get(key) != current.get(key):
                raise ExtractError(
                    f"{str(path)!r} was recorded with other {FIELDS[key]} than {str(run.path)!r} holds now "
                    f"({key} {str(record.get(key))[:12]} vs {str(current.get(key))[:12]}): exits.pt or the weights "
                    "were replaced; delete that cache to re-record it, or choose another --out"
                )
        want = (info.fingerprints.get("data") or {}).get(split)
        if want is not None and record.get("data") != want:
            raise ExtractError(
                f"{str(path)!r} was recorded from other data than {info.dataset}/{split} holds now; "
                "delete it to re-record it, or choose another --out"
            )


def shard_fingerprint(info: RunInfo, split: str) -> str:
    """What a recording shard of ``split`` must carry to be resumed: the run and the split's data."""
    from dyce_search.provenance import digest

    return digest({"run": info.fingerprints.get("run"), "data": (info.fingerprints.get("data") or {}).get(split)})


def run_pipeline(
    out: str | os.PathLike,
    backbone,
    bank,
    *,
    train_data: Dataset | None,
    splits: Mapping[str, Dataset],
    info: RunInfo,
    settings: Settings,
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

    Status lines go to this module's logger at INFO, from rank 0 only.

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
    say = log.info if rank == 0 else (lambda _msg: None)  # one copy of each line, not one per rank
    run = RunDir(out)
    if rank == 0:
        run.path.mkdir(parents=True, exist_ok=True)
        info = _fingerprinted(info, backbone, train_data, splits, settings.hash_data, say)
        if run.run_json.is_file():
            old = RunInfo.load(run.run_json)
            _same_run(old, info, str(run.path))
            info = _merge_rerun(old, info, run)
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
            fingerprint={
                "backbone": info.backbone, "weights": info.weights, "exits": info.exits, "seed": info.seed,
                "training": info.training, "fingerprints": {k: info.fingerprints.get(k) for k in ("backbone", "training")},
            },
            progress=settings.progress,
        )
        bank.to("cpu")
        if rank == 0:
            bank.save(run.exits)
        _barrier()
    if rank == 0:
        if not settings.keep_checkpoints:
            # exits.pt is written: the checkpoint only served to resume training, and weighs more
            shutil.rmtree(run.checkpoints, ignore_errors=True)
        info = _with_exits(info, bank.to("cpu"))
        _check_recorded_caches(run, info)
        info.save(run.run_json)
    _barrier()
    info = RunInfo.load(run.run_json)

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
            desc=f"record {split}", fingerprint=shard_fingerprint(info, split),
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
