"""The embedded real demo: DyCE on scikit-learn's handwritten digits, offline, on CPU.

scikit-learn ships the UCI optical-recognition digits (1797 grey 8x8 images,
10 classes) with the library, so this demo runs the whole extraction pipeline
on real data without a download:

1. a fixed stratified split of the 1797 samples into ``train`` (1000: trains
   the backbone and then the exits), ``calibration`` (400: the search cache)
   and ``test`` (397: the held-out cache);
2. a small ResNet (a 3x3 stem and nine residual BasicBlocks over three stages
   of 16/32/64 channels at 16x16/8x8/4x4, images upsampled 2x) trained here
   with a fixed seed, then frozen;
3. the backbone built by name (``build_backbone("digits", ...)``, registered
   when this module is imported) through the generic block adapter, cut after
   every block but the last (8 early positions);
4. exits ``mlp1``, ``mlp2x32``, ``mlp2x64`` at every position trained by
   distillation, and both caches recorded, into a run directory.

``make digits`` re-creates the shipped run (``python -m extract digits`` with
:data:`PORTABLE_ENV` set; see :func:`demo_numerics` for why the environment
matters).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .backbones import SegmentedBackbone, from_blocks, load_state_strict, read_state_dict, register_backbone
from .errors import ExtractError

log = logging.getLogger(__name__)

NAME = "digits"
DATASET = "sklearn-digits"
NUM_CLASSES = 10
IMAGE_SIZE = 16
INPUT_SIZE = (1, IMAGE_SIZE, IMAGE_SIZE)
SPLIT_SIZES = {"train": 1000, "calibration": 400, "test": 397}
SPLIT_SEED = 0
STAGES = ((16, 3, 1), (32, 3, 2), (64, 3, 2))  # (channels, blocks, first stride)
EXIT_TYPES = ("mlp1", "mlp2x32", "mlp2x64")
BACKBONE_EPOCHS = 30
EXIT_EPOCHS = 60
BACKBONE_FILE_NOTE = "trained on the digits train split by extract.digits"
# Process environment that makes the run's numbers independent of the CPU
# (see demo_numerics). torch reads ATEN_CPU_CAPABILITY at its first kernel
# call and MKL reads MKL_CBWR at its first call, so they cannot be switched
# from inside a running process: whoever starts it sets them (`make digits`
# does) and run_demo records whether they were.
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


# --------------------------------------------------------------------- data
class DigitsSplit(Dataset):
    """One split of the digits as tensors: ``(image [1, 16, 16] float32, label)``.

    Pixels (0..16) are scaled to [-1, 1] and upsampled bilinearly from 8x8.

    Attributes
    ----------
    images : Tensor float32 [M, 1, 16, 16]
    labels : Tensor int64 [M]
    sample_ids : ndarray int64 [M]
        Index of each sample in ``sklearn.datasets.load_digits()``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sample_ids: np.ndarray):
        self.images, self.labels, self.sample_ids = images, labels, sample_ids

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])

    def identity(self) -> dict:
        """What identifies this split for provenance records: its sample ids, pixels and labels."""
        import hashlib

        h = hashlib.sha256()
        for array in (self.sample_ids.astype(np.int64), self.images.numpy(), self.labels.numpy()):
            h.update(np.ascontiguousarray(array).tobytes())
        return {"kind": "digits", "samples": int(len(self)), "sha256": h.hexdigest()}


def load_splits() -> dict[str, DigitsSplit]:
    """The fixed stratified ``train`` / ``calibration`` / ``test`` split of the 1797 digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    ids = np.arange(len(digits.target))
    rest_ids, train_ids = train_test_split(
        ids, test_size=SPLIT_SIZES["train"], stratify=digits.target, random_state=SPLIT_SEED
    )
    test_ids, calib_ids = train_test_split(
        rest_ids, test_size=SPLIT_SIZES["calibration"], stratify=digits.target[rest_ids], random_state=SPLIT_SEED
    )
    images = torch.from_numpy(digits.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    out = {}
    for split, chosen in (("train", train_ids), ("calibration", calib_ids), ("test", test_ids)):
        chosen = np.sort(chosen)
        out[split] = DigitsSplit(images[chosen].contiguous(), labels[chosen].contiguous(), chosen.astype(np.int64))
    return out


# ----------------------------------------------------------------- backbone
class BasicBlock(nn.Module):
    """The ResNet basic block (two 3x3 convolutions, identity or 1x1 projection shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class DigitsResNet(nn.Module):
    """Stem + three stages of three BasicBlocks (``stage{s}.{j}``) + global average pooling and a linear head."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        first = STAGES[0][0]
        self.stem = nn.Sequential(nn.Conv2d(1, first, 3, 1, 1, bias=False), nn.BatchNorm2d(first), nn.ReLU())
        cin = first
        for s, (cout, n, stride) in enumerate(STAGES, start=1):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
            setattr(self, f"stage{s}", nn.Sequential(*blocks))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for _, block in self.named_blocks():
            x = block(x)
        return self.head(x)

    def named_blocks(self) -> list[tuple[str, nn.Module]]:
        """``("stage{s}.{j}", block)`` in depth order: the position names."""
        return [
            (f"stage{s}.{j}", block)
            for s in range(1, len(STAGES) + 1)
            for j, block in enumerate(getattr(self, f"stage{s}"))
        ]


def segment(model: DigitsResNet, weights: str | None = None) -> SegmentedBackbone:
    """Cut the model after every block but the last (generic block adapter)."""
    return from_blocks(
        NAME,
        model.stem,
        model.named_blocks(),
        model.head,
        num_classes=model.head[-1].out_features,
        input_size=INPUT_SIZE,
        weights=weights,
    )


def _factory(weights: str | None, num_classes: int) -> SegmentedBackbone:
    """``build_backbone("digits", weights)``: random init, or a checkpoint of either form."""
    model = DigitsResNet(num_classes)
    if weights is None:
        return segment(model)
    state = read_state_dict(weights)
    target = f"the digits ResNet with {num_classes} classes"
    if any(k.startswith("segments.") for k in state):
        backbone = segment(model, weights=os.fspath(weights))
        load_state_strict(backbone, state, source=os.fspath(weights), target=target, classifier_key="head.2.weight")
        return backbone
    load_state_strict(model, state, source=os.fspath(weights), target=target, classifier_key="head.2.weight")
    return segment(model, weights=os.fspath(weights))


def _transform(weights: str | None):
    # The splits are already tensors at the model's input size.
    return None


register_backbone(
    NAME, _factory, _transform, num_classes=NUM_CLASSES, exit_types=",".join(EXIT_TYPES),
    out=os.path.join("data", "digits"),
    # looked up when run, so that tests can replace run_demo
    demo=lambda out, **options: run_demo(out, **options),
)


# ----------------------------------------------------------- backbone training
@dataclass
class BackboneFit:
    """Outcome of :func:`train_backbone`: accuracies of the trained model."""

    train_accuracy: float
    calibration_accuracy: float
    test_accuracy: float


def _shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to two pixels (pad with the background value, crop)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    dy = torch.randint(0, 5, (B,), generator=generator)
    dx = torch.randint(0, 5, (B,), generator=generator)
    rows = (dy[:, None] + torch.arange(H)[None, :])[:, :, None].expand(B, H, W)
    cols = (dx[:, None] + torch.arange(W)[None, :])[:, None, :].expand(B, H, W)
    b = torch.arange(B)[:, None, None].expand(B, H, W)
    return padded[b, 0, rows, cols].unsqueeze(1)


def accuracy(model: nn.Module, split: DigitsSplit, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on a split (eval mode, no grad)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            logits = model(split.images[i : i + batch_size])
            correct += int((logits.argmax(1) == split.labels[i : i + batch_size]).sum())
    return correct / len(split)


def train_backbone(
    splits: dict[str, DigitsSplit],
    *,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[DigitsResNet, BackboneFit]:
    """Train the digits ResNet on the ``train`` split (cross-entropy, Adam, cosine schedule).

    Deterministic for a given seed on a given machine.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = DigitsResNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    train = splits["train"]
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc="train digits backbone", unit="epoch", disable=not progress):
        model.train()
        order = torch.randperm(len(train), generator=g)
        for i in range(0, len(train), batch_size):
            idx = order[i : i + batch_size]
            x = _shift(train.images[idx], g)
            loss = F.cross_entropy(model(x), train.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    fit = BackboneFit(*(accuracy(model, splits[s]) for s in ("train", "calibration", "test")))
    return model, fit


def build(weights: str | os.PathLike | None = None) -> SegmentedBackbone:
    """The digits backbone, frozen: ``build_backbone("digits", weights)``."""
    from .backbones import build_backbone

    return build_backbone(NAME, weights, num_classes=NUM_CLASSES)


# ---------------------------------------------------------------- numerics
def portable_environment() -> bool:
    """Whether this process was started with :data:`PORTABLE_ENV` (read by torch and MKL at start-up)."""
    return all(os.environ.get(k, "").lower() == v.lower() for k, v in PORTABLE_ENV.items())


@contextlib.contextmanager
def demo_numerics() -> Iterator[None]:
    """The demo's floating-point settings for the block; the previous ones restored afterwards.

    Always: one thread (results then do not depend on the core count; for a
    10-MMAC model a second thread buys little) and deterministic algorithms.
    That makes a rerun repeat bit for bit on the same CPU type and torch build.

    Under :data:`PORTABLE_ENV` also convolutions without oneDNN and NNPACK:
    both pick their kernels by the CPU's instruction set, and kernels that sum
    in another order give other last bits, which 30 epochs of training grow
    into other weights. Without them convolutions run as ATen's im2col + MKL
    GEMM, which ``MKL_CBWR=COMPATIBLE`` makes CPU independent, so the run
    repeats on any x86-64 CPU with the same torch build, at about 3x the CPU
    time (and with other numbers than the fastest kernels give).
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    portable = portable_environment()
    # only oneDNN's on/off switch: mkldnn.flags() would also reset its TF32 and precision settings,
    # and set_flags' signature differs between torch releases; these two calls exist in all of them
    onednn = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(not portable and onednn)
    try:
        with torch.backends.nnpack.flags(enabled=not portable and torch._C._get_nnpack_enabled()):
            yield
    finally:
        torch._C._set_mkldnn_enabled(onednn)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def numerics() -> dict:
    """What, besides the code and the seed, decides the demo's numbers in this process.

    ``torch`` (the build), ``cpu_capability`` (the instruction set ATen's
    kernels use: ``DEFAULT`` under :data:`PORTABLE_ENV`, else the best the
    CPU has), ``mkl_cbwr`` (as the environment gives it), ``onednn`` and
    ``nnpack`` (off under :func:`demo_numerics`) and ``portable``: whether
    every CPU-dependent kernel choice is pinned, so that the run repeats bit
    for bit whatever the x86-64 CPU's instruction set (same torch build).
    """
    record = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
        "onednn": bool(torch.backends.mkldnn.enabled),
        "nnpack": bool(torch._C._get_nnpack_enabled()),  # torch.backends.nnpack has no public getter
    }
    record["portable"] = (
        record["cpu_capability"] == "DEFAULT"
        and record["mkl_cbwr"] == PORTABLE_ENV["MKL_CBWR"]
        and not (record["onednn"] or record["nnpack"])
    )
    return record


def _numerics_note(record: dict) -> str:
    """One log line on how far the run's numbers carry to other machines."""
    if record["portable"]:
        return f"numerics: portable (torch {record['torch']}, ATen DEFAULT, MKL_CBWR=COMPATIBLE)"
    env = " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
    return (
        f"numerics: ATen {record['cpu_capability']}, MKL_CBWR={record['mkl_cbwr']}: the result repeats only on "
        f"this CPU type; start the process with {env} (make digits PORTABLE=1 does) for one independent of the "
        "instruction set"
    )


# ------------------------------------------------------------------ the demo
def run_demo(
    out: str | os.PathLike = os.path.join("data", "digits"),
    *,
    exit_epochs: int | None = None,
    backbone_epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run the whole extraction pipeline on the digits into the run directory ``out``.

    Trains the backbone unless ``out/backbone.pt`` exists, then hands over to
    :func:`extract.pipeline.run_pipeline` (exits, MACs, the ``calibration`` and
    ``test`` caches). Deterministic: fixed seeds under :func:`demo_numerics`
    (restored afterwards); ``run.json`` records :func:`numerics` under
    ``training.numerics``. A rerun on the same CPU type gives equal caches and
    byte-identical ``backbone.pt`` / ``exits.pt``; under :data:`PORTABLE_ENV`
    also one on an x86-64 CPU with another instruction set (same torch build).

    Parameters
    ----------
    out : path
        Run directory (``data/digits`` holds the shipped one).
    exit_epochs : int, optional
        Exit-training epochs (default :data:`EXIT_EPOCHS`).
    backbone_epochs : int, optional
        Backbone-training epochs (default :data:`BACKBONE_EPOCHS`).
    batch_size : int, optional
        Exit training and recording batch size (default 64).
    seed : int
        Seeds the backbone, the exits and the shuffling.

    Returns
    -------
    dict split -> pathlib.Path of the caches.
    """
    exit_epochs = EXIT_EPOCHS if exit_epochs is None else int(exit_epochs)
    backbone_epochs = BACKBONE_EPOCHS if backbone_epochs is None else int(backbone_epochs)
    if exit_epochs < 1 or backbone_epochs < 1:
        raise ExtractError("epochs must be at least 1")
    with demo_numerics():
        return _run_demo(out, exit_epochs, backbone_epochs, batch_size, seed, progress)


def _run_demo(out, exit_epochs, backbone_epochs, batch_size, seed, progress) -> dict:
    from .exits import parse_exit_types
    from .pipeline import Settings, run_pipeline, seeded_bank
    from .rundir import RunDir, RunInfo

    record = numerics()
    log.info(_numerics_note(record))
    torch.manual_seed(seed)
    splits = load_splits()
    run = RunDir(out)
    fit = None
    if run.backbone.is_file():
        log.info(f"backbone: using {run.backbone}")
        backbone = build(str(run.backbone))
    else:
        log.info(f"backbone: training the digits ResNet for {backbone_epochs} epochs on {len(splits['train'])} images")
        model, fit = train_backbone(splits, epochs=backbone_epochs, seed=seed, progress=progress)
        log.info(
            f"backbone: accuracy train {fit.train_accuracy:.4f}, calibration {fit.calibration_accuracy:.4f}, "
            f"test {fit.test_accuracy:.4f}"
        )
        backbone = segment(model, weights=None)
        backbone.eval().requires_grad_(False)
    settings = Settings(
        epochs=exit_epochs, batch_size=batch_size or 64, workers=0, seed=seed, device="cpu", progress=progress
    )
    bank = seeded_bank(backbone, parse_exit_types(",".join(EXIT_TYPES)), seed)
    training = {
        "epochs": exit_epochs, "batch_size": settings.batch_size, "lr": settings.lr, "split": "train",
        "augment": False, "loss": "soft cross-entropy to the head (Eq. 2-3)", "backbone_epochs": backbone_epochs,
        "numerics": record,
    }
    if fit is not None:
        training["backbone_accuracy"] = fit.__dict__
    elif run.run_json.is_file():
        training = {**RunInfo.load(run.run_json).training, **{k: training[k] for k in ("epochs", "batch_size")}}
    info = RunInfo(
        backbone=NAME,
        weights=f"{BACKBONE_FILE_NOTE} (seed {seed})",
        num_classes=NUM_CLASSES,
        input_size=INPUT_SIZE,
        positions=[p.to_dict() for p in backbone.positions],
        exits=bank.spec(),
        dataset=DATASET,
        splits=("calibration", "test"),
        seed=seed,
        backbone_file=True,
        backbone_module=__name__,
        training=training,
    )
    caches = run_pipeline(
        out,
        backbone,
        bank,
        train_data=splits["train"],
        splits={"calibration": splits["calibration"], "test": splits["test"]},
        info=info,
        settings=settings,
    )
    return caches
