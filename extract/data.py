"""Datasets and loaders for extraction.

Two jobs: open an ImageNet-style folder split (``DATA/train``, ``DATA/val``,
torchvision ``ImageFolder`` layout) with one clear error when it is missing or
empty, or when one of its images cannot be decoded (:class:`UnreadableImageError`,
naming the file, also from a DataLoader worker); and hand out samplers whose
order depends only on ``(seed, epoch)`` (training: torch's ``DistributedSampler``)
or on the dataset index (recording), on one process or under DDP. The training
transforms come from the weights' library (``extract.backbones.train_transform``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler, Sampler

from .errors import ExtractError


class IndexedDataset(Dataset):
    """Yield ``(input, label, index)`` so recorded rows carry their dataset index.

    ``label`` is -1 where the wrapped dataset yields none (unlabelled data).
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        if isinstance(item, (tuple, list)):
            x, y = item[0], (item[1] if len(item) > 1 else -1)
        else:
            x, y = item, -1
        return x, int(y), int(index)


class UnreadableImageError(ExtractError):
    """An image file of the dataset cannot be decoded (truncated, corrupt, not an image); names the file.

    A DataLoader worker sends an exception back as text and the main process
    rebuilds it as ``type(exc)(text)`` (``torch._utils.ExceptionWrapper.reraise``),
    the text being ``"Caught UnreadableImageError in DataLoader worker process
    N.\nOriginal Traceback ...\nextract.data.UnreadableImageError: <message>\n"``.
    Built from such a text, the exception keeps only ``<message>``, so it
    reads the same with and without workers (one ``error:`` line in the CLI).
    """

    def __init__(self, message: str):
        super().__init__(_own_message(str(message), type(self)))


def _own_message(text: str, cls: type) -> str:
    """``text`` itself, or the exception's own one-line message if ``text`` is a worker's re-raise text."""
    if not (text.startswith("Caught ") and "\nOriginal Traceback" in text):
        return text
    prefix = f"{cls.__module__}.{cls.__qualname__}: "
    lines = text.rstrip("\n").split("\n")
    return lines[-1][len(prefix):] if lines[-1].startswith(prefix) else text


def load_image(path: str):
    """Decode one image file as RGB (the loader of :func:`image_folder`).

    Raises
    ------
    UnreadableImageError
        The file cannot be opened, or is truncated, corrupt or not an image;
        the message names it.
    """
    import struct

    from PIL import Image

    try:
        with open(path, "rb") as fh, Image.open(fh) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as exc:
        # one line: a worker's re-raise keeps only the last line of the text (see UnreadableImageError)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UnreadableImageError(f"image file {path!r} is unreadable: {reason}") from None


def image_folder(root: str | os.PathLike, split: str, transform=None):
    """The ``root/split`` folder as a torchvision ``ImageFolder``.

    Parameters
    ----------
    root : path
        Dataset root holding one folder per split, each with one folder per class.
    split : str
        ``"train"``, ``"val"`` or any other sub-folder name.
    transform : callable, optional
        Applied to each PIL image.

    Raises
    ------
    ExtractError
        ``root`` or ``root/split`` does not exist, or holds no class folder with images.
        Reading an item whose file cannot be decoded raises :class:`UnreadableImageError`.
    """
    from torchvision.datasets import ImageFolder

    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ExtractError(
            f"data folder {root!r} does not exist; pass --data DIR with DIR/train/<class>/*.jpeg and DIR/val/<class>/*.jpeg"
        )
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        raise ExtractError(f"data folder {root!r} has no {split!r} split (sub-folders found: {found or 'none'})")
    try:
        dataset = ImageFolder(path, transform=transform, loader=load_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise ExtractError(f"data folder {path!r} holds no images in class sub-folders ({exc})") from exc
    return dataset


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the current process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# The per-run seed is spread by this stride before DistributedSampler adds the
# epoch (its order is randperm(n) seeded with ``seed + epoch``): runs with
# neighbouring seeds then never share an epoch's order, and the stride keeps
# the order every earlier run (the shipped data/digits demo included) trained on.
SEED_STRIDE = 100_003


def training_sampler(dataset: Dataset, *, seed: int, rank: int = 0, world_size: int = 1) -> DistributedSampler:
    """torch's ``DistributedSampler`` for the training order: shuffled by ``(seed, epoch)``, this rank's share.

    Call ``set_epoch(epoch)`` before each epoch. The order depends only on
    ``(seed, epoch)`` (pad by wrapping, then every ``world_size``-th index from
    ``rank``), with or without a process group, so a resumed run draws the
    same batches for the same epoch. ``rank``/``world_size`` are passed
    explicitly, so no process group is needed on one process.

    Raises
    ------
    ExtractError
        ``dataset`` is empty.
    """
    if len(dataset) <= 0:
        raise ExtractError("cannot train on an empty dataset")
    return DistributedSampler(
        dataset, num_replicas=int(world_size), rank=int(rank), shuffle=True,
        seed=int(seed) * SEED_STRIDE, drop_last=False,
    )


class ChunkSampler(Sampler[int]):
    """Dataset indices ``start .. stop-1`` in order, chunk by chunk, this rank's share.

    Chunk ``c`` covers ``[start + c*chunk, start + (c+1)*chunk)``. Inside each
    chunk rank ``r`` takes every ``world``-th index from ``r``, padded by
    repeating the chunk's last index so every rank yields the same count per
    chunk (:meth:`per_rank`): all ranks then reach each chunk's end after the
    same number of samples and can gather it together. The padding repeats are
    dropped when the chunk is merged.
    """

    def __init__(self, start: int, stop: int, chunk: int, *, rank: int = 0, world_size: int = 1):
        if chunk <= 0:
            raise ExtractError(f"shard size must be positive, got {chunk}")
        self.start, self.stop, self.chunk = int(start), int(stop), int(chunk)
        self.rank, self.world_size = int(rank), int(world_size)

    def chunks(self) -> list[tuple[int, int]]:
        """``(first, stop)`` dataset-index range of each chunk."""
        return [(a, min(a + self.chunk, self.stop)) for a in range(self.start, self.stop, self.chunk)]

    def per_rank(self, first: int, stop: int) -> int:
        """Samples each rank yields for the chunk ``[first, stop)``."""
        return math.ceil((stop - first) / self.world_size)

    def __len__(self) -> int:
        return sum(self.per_rank(a, b) for a, b in self.chunks())

    def __iter__(self) -> Iterator[int]:
        for a, b in self.chunks():
            mine = list(range(a + self.rank, b, self.world_size))
            mine += [b - 1] * (self.per_rank(a, b) - len(mine))
            yield from mine
