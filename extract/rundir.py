"""The run directory: what ``python -m extract`` writes and the run-time model loads.

Layout (see docs/extract.md)::

    RUN/
      run.json                 format "dyce-run", version 1: what was run (RunInfo)
      exits.pt                 the trained ExitBank (spec + state_dict)
      backbone.pt              only when name + weights cannot rebuild the backbone
      macs.json                MacsTable: per-position backbone MACs, exit MACs, total
      checkpoints/last.pt      exit training checkpoint (resume; removed once exits.pt is written
                               unless Settings.keep_checkpoints)
      shards-{split}/          recording shards while a split is being recorded
      cache-{split}.parquet    one dyce_search.ExitCache per recorded split

Every file is written atomically (temp file in the same folder, then
``os.replace``), so a killed run leaves earlier files whole and later ones absent.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from dyce_search._io import write_text_atomic

from .errors import ExtractError

RUN_FORMAT = "dyce-run"
RUN_VERSION = 1
RUN_JSON = "run.json"
EXITS_FILE = "exits.pt"
BACKBONE_FILE = "backbone.pt"
MACS_FILE = "macs.json"
CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class RunInfo:
    """Contents of ``run.json``.

    Attributes
    ----------
    backbone : str
        Backbone name for ``build_backbone``.
    weights : str or None
        Weights spec as given (``None`` = random init, a tag, or a checkpoint path).
    num_classes : int
    input_size : tuple of int
        ``(C, H, W)`` the backbone takes.
    positions : list of dict
        The P early positions (``PositionInfo.to_dict``: name, channels, reduction, module, and the layout of tokens).
    exits : dict
        The exit bank spec (``ExitBank.spec()``).
    dataset : str or None
        Dataset name or path.
    splits : tuple of str
        Splits recorded to ``cache-{split}.parquet``.
    seed : int
    created : str
        ISO 8601 UTC time the run directory was created.
    backbone_file : bool
        Whether ``backbone.pt`` holds the backbone weights (else name + weights rebuild it).
    backbone_module : str or None
        Module to import before ``build_backbone`` (one that calls ``register_backbone``).
    training : dict
        Exit-training settings (epochs, batch_size, lr, train split, ...).
    preprocess : str or None
        The evaluation transform the recorded images went through (its text).
    fingerprints : dict
        Digests of what the run is made of (``extract.fingerprint``):
        ``backbone``, ``preprocess``, ``training``, ``data`` (split -> digest
        of that split's samples), and once the exits are final ``exits`` and
        ``run``. Every cache carries the same digests in its provenance record.
    """

    backbone: str
    weights: str | None
    num_classes: int
    input_size: tuple
    positions: list
    exits: dict
    dataset: str | None
    splits: tuple
    seed: int
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    backbone_file: bool = False
    backbone_module: str | None = None
    training: dict = field(default_factory=dict)
    preprocess: str | None = None
    fingerprints: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "backbone": self.backbone,
            "weights": self.weights,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "positions": list(self.positions),
            "exits": self.exits,
            "dataset": self.dataset,
            "splits": list(self.splits),
            "seed": self.seed,
            "created": self.created,
            "backbone_file": self.backbone_file,
            "backbone_module": self.backbone_module,
            "training": self.training,
            "preprocess": self.preprocess,
            "fingerprints": self.fingerprints,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "run.json") -> "RunInfo":
        if not isinstance(d, dict) or d.get("format") != RUN_FORMAT:
            raise ExtractError(f"{where}: not a DyCE run file (format {d.get('format') if isinstance(d, dict) else d!r})")
        if d.get("version") != RUN_VERSION:
            raise ExtractError(f"{where}: run file version {d.get('version')!r} is not supported (expected {RUN_VERSION})")
        try:
            return cls(
                backbone=str(d["backbone"]),
                weights=d["weights"],
                num_classes=int(d["num_classes"]),
                input_size=tuple(int(s) for s in d["input_size"]),
                positions=list(d["positions"]),
                exits=dict(d["exits"]),
                dataset=d.get("dataset"),
                splits=tuple(d.get("splits", ())),
                seed=int(d.get("seed", 0)),
                created=str(d.get("created", "")),
                backbone_file=bool(d.get("backbone_file", False)),
                backbone_module=d.get("backbone_module"),
                training=dict(d.get("training") or {}),
                preprocess=d.get("preprocess"),
                fingerprints=dict(d.get("fingerprints") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ExtractError(f"{where}: missing or malformed field {exc}") from exc

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON, atomically."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunInfo":
        path = Path(path)
        if not path.is_file():
            raise ExtractError(
                f"{str(path.parent)!r} is not a run directory: no {path.name} (create one with python -m extract MODEL --data DIR)"
            )
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ExtractError(f"{str(path)!r} is not readable JSON ({exc})") from exc
        return cls.from_dict(d, where=str(path))


class RunDir:
    """Paths inside one run directory (nothing is created until asked)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def exits(self) -> Path:
        return self.path / EXITS_FILE

    @property
    def backbone(self) -> Path:
        return self.path / BACKBONE_FILE

    @property
    def macs(self) -> Path:
        return self.path / MACS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def cache(self, split: str) -> Path:
        """``cache-{split}.parquet``."""
        return self.path / f"cache-{split}.parquet"

    def shards(self, split: str) -> Path:
        """Folder of the resumable recording shards of ``split``."""
        return self.path / f"shards-{split}"

    def caches(self) -> dict[str, Path]:
        """Recorded caches present, by split name."""
        return {p.name[len("cache-") : -len(".parquet")]: p for p in sorted(self.path.glob("cache-*.parquet"))}


def save_backbone(path: str | os.PathLike, backbone) -> None:
    """Save the SegmentedBackbone's state dict (keys ``segments.*``, ``head.*``) atomically."""
    from .train import atomic_torch_save

    atomic_torch_save(backbone.state_dict(), path)


def import_backbone_module(module: str | None) -> None:
    """Import the module that registers a user backbone (``register_backbone``)."""
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ExtractError(f"cannot import {module!r}, which registers the run's backbone ({exc})") from exc


def check_positions(backbone, positions: list, where: str) -> None:
    """Raise ExtractError unless ``backbone.positions`` match the recorded position dicts."""
    have = [p.to_dict() for p in backbone.positions]
    from .backbones.base import PositionInfo

    want = [PositionInfo.from_dict(d).to_dict() for d in positions]
    if have != want:
        diff = next((i for i, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
        raise ExtractError(
            f"{where}: backbone {backbone.name!r} does not match the recorded architecture "
            f"({len(have)} positions vs {len(want)}; first difference at position {diff}: "
            f"{have[diff] if diff < len(have) else None} vs {want[diff] if diff < len(want) else None})"
        )


def load_run(run_dir: str | os.PathLike, map_location: str = "cpu"):
    """Load the frozen backbone, the trained exits and the run description.

    Parameters
    ----------
    run_dir : path
        A directory written by ``python -m extract``.
    map_location : str or torch.device
        Where to put both models.

    Returns
    -------
    backbone : SegmentedBackbone
        Frozen, eval mode.
    bank : ExitBank
        Trained exits, eval mode.
    info : RunInfo

    Raises
    ------
    ExtractError
        Missing ``run.json`` / ``exits.pt`` / ``backbone.pt``, or a backbone or
        exit bank that does not match the recorded architecture.
    """
    from .backbones import build_backbone
    from .exits import ExitBank

    run = RunDir(run_dir)
    info = RunInfo.load(run.run_json)
    import_backbone_module(info.backbone_module)
    if info.backbone_file:
        if not run.backbone.is_file():
            raise ExtractError(f"{str(run.path)!r}: run.json says the backbone weights are in {BACKBONE_FILE}, which is missing")
        backbone = build_backbone(info.backbone, str(run.backbone), num_classes=info.num_classes)
        backbone.weights = info.weights
    else:
        backbone = build_backbone(info.backbone, info.weights, num_classes=info.num_classes)
    check_positions(backbone, info.positions, str(run.run_json))
    if not run.exits.is_file():
        raise ExtractError(
            f"{str(run.path)!r}: no trained exits ({EXITS_FILE} missing); rerun python -m extract with --out {run.path}"
        )
    bank = ExitBank.load(run.exits, map_location="cpu")
    if json.loads(json.dumps(bank.spec())) != json.loads(json.dumps(info.exits)):
        raise ExtractError(f"{str(run.exits)!r}: exit bank does not match the one described in {RUN_JSON}")
    if [p.name for p in bank.positions] != list(backbone.position_names):
        raise ExtractError(f"{str(run.exits)!r}: exit positions do not match backbone {backbone.name!r}")
    if bank.num_classes != backbone.num_classes:
        raise ExtractError(
            f"{str(run.exits)!r}: exits produce {bank.num_classes} classes, the backbone {backbone.num_classes}"
        )
    backbone.to(map_location).eval()
    bank.to(map_location).eval()
    return backbone, bank, info
