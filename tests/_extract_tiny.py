"""A tiny registered backbone and a tiny fake ImageFolder for the extraction tests.

Importing this module registers ``tinynet`` (``python -m extract tinynet
--import tests._extract_tiny ...``): a 3-block CNN at 3x32x32 whose eval
transform resizes PIL images to 32x32, so CLI and DDP tests run in seconds on CPU.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from extract.backbones import from_blocks, load_state_strict, read_state_dict, register_backbone

NAME = "tinynet"
INPUT_SIZE = (3, 32, 32)


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU()),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def segment(model: TinyNet, weights=None):
    blocks = [(f"block{i}", b) for i, b in enumerate(model.blocks)]
    return from_blocks(NAME, model.stem, blocks, model.head, model.head[-1].out_features, INPUT_SIZE, weights=weights)


def factory(weights, num_classes):
    model = TinyNet(num_classes)
    if weights is None:
        return segment(model)
    state = read_state_dict(weights)
    target = f"tinynet with {num_classes} classes"
    if any(k.startswith("segments.") for k in state):
        backbone = segment(model, os.fspath(weights))
        load_state_strict(backbone, state, source=os.fspath(weights), target=target, classifier_key="head.2.weight")
        return backbone
    load_state_strict(model, state, source=os.fspath(weights), target=target, classifier_key="head.2.weight")
    return segment(model, os.fspath(weights))


def transform(weights):
    from torchvision import transforms as T

    return T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor(), T.Normalize((0.5,) * 3, (0.25,) * 3)])


def train_transform(weights):
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize((0.5,) * 3, (0.25,) * 3)])


register_backbone(NAME, factory, transform, train_transform=train_transform)


def make_image_folder(root, splits=("train", "val"), classes=3, per_class=4, seed=0, size=40):
    """Write ``root/<split>/class<c>/img<i>.png`` random-colour PNGs; returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in splits:
        for c in range(classes):
            folder = os.path.join(root, split, f"class{c}")
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                base = np.zeros((size, size, 3), np.uint8)
                base[..., c % 3] = 120 + 40 * c
                noise = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
                Image.fromarray(base + noise).save(os.path.join(folder, f"img{i}.png"))
    return root


def ddp_worker(rank, world_size, port, argv):
    """``torch.multiprocessing.spawn`` target: one torchrun-like rank running the CLI."""
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank), OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    from extract.cli import main

    code = main(list(argv))
    if code != 0:
        raise RuntimeError(f"rank {rank}: python -m extract exited with {code}")


def run_cli(capsys, *argv):
    """``python -m extract`` in process: ``(exit status, stdout, stderr)``."""
    from extract.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err):
    """The single ``error: ...`` line of ``err`` (asserting there is nothing else, no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]
