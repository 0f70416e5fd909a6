"""Exit networks f_{n,k} (paper Eq. 1, Sec. IV-A): global pooling + a small MLP.

Every exit maps a feature o_p to logits over the same classes as the original
head. Pooling follows the position's layout (``extract.backbones.layout``):
global average over space for NCHW maps; for NLC tokens the mean over the
patch tokens (default) or the class token, chosen per exit type. :class:`ExitBank` holds all candidate exits at all early
positions, so that one backbone pass per batch feeds every exit during
training and recording.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .backbones.base import PositionInfo
from .backbones.layout import DEFAULT_TOKEN_POOL, NCHW, TOKEN_POOLS, FeatureLayout
from .errors import ExtractError

SPEC_FORMAT = "dyce-exit-bank"
SPEC_VERSION = 1
_NAME = re.compile(r"^mlp(\d+)(?:x(\d+))?(?:-(\w+))?$")


@dataclass(frozen=True)
class ExitType:
    """Architecture of one exit: an A-layer MLP after global pooling.

    Attributes
    ----------
    name : str
        Identifier used in caches and configurations, e.g. ``"mlp3x500"``.
    hidden : tuple of int
        Widths of the ``A - 1`` hidden layers (empty for a single Linear layer);
        ReLU follows every hidden layer.
    token_pool : {"avg", "token"}
        How the exit pools token features (NLC positions): the mean over the
        patch tokens (``"avg"``, default) or the class token (``"token"``,
        positions whose tokens a class token leads). Feature maps are always
        averaged over space.
    """

    name: str
    hidden: tuple[int, ...] = ()
    token_pool: str = DEFAULT_TOKEN_POOL

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.name or "." in self.name:
            raise ExtractError(f"exit type name {self.name!r} must be non-empty and contain no '.'")
        if any(h <= 0 for h in self.hidden):
            raise ExtractError(f"exit type {self.name!r}: hidden widths must be positive, got {self.hidden}")
        if self.token_pool not in TOKEN_POOLS:
            raise ExtractError(f"exit type {self.name!r}: token_pool {self.token_pool!r} is not one of {TOKEN_POOLS}")

    @property
    def layers(self) -> int:
        """A, the number of Linear layers."""
        return len(self.hidden) + 1

    @classmethod
    def parse(cls, name: str) -> ExitType:
        """``"mlp1"`` -> no hidden layer; ``"mlpAxW"`` -> A Linear layers, A - 1 hidden of width W.

        A suffix ``-token`` (``"mlp3x500-token"``) makes the exit read the class
        token of token features; ``-avg`` is the default, the patch-token mean.
        """
        match = _NAME.match(name.strip())
        if match is None:
            raise ExtractError(
                f"exit type {name!r} is not of the form 'mlp1' or 'mlpAxW' (e.g. 'mlp3x500'), "
                "optionally with '-token' or '-avg'"
            )
        layers, width, pool = int(match[1]), match[2], match[3] or DEFAULT_TOKEN_POOL
        if pool not in TOKEN_POOLS:
            raise ExtractError(f"exit type {name!r}: token pooling {pool!r} is not one of {TOKEN_POOLS}")
        if layers < 1:
            raise ExtractError(f"exit type {name!r}: needs at least one layer")
        if layers == 1:
            if width is not None:
                raise ExtractError(f"exit type {name!r}: a 1-layer MLP has no hidden width; write 'mlp1'")
            return cls(name.strip(), (), pool)
        if width is None:
            raise ExtractError(f"exit type {name!r}: a {layers}-layer MLP needs a width, e.g. 'mlp{layers}x500'")
        return cls(name.strip(), (int(width),) * (layers - 1), pool)

    def to_dict(self) -> dict:
        """Name and hidden widths, and ``token_pool`` unless the default (so older specs keep their digests)."""
        extra = {} if self.token_pool == DEFAULT_TOKEN_POOL else {"token_pool": self.token_pool}
        return {"name": self.name, "hidden": list(self.hidden), **extra}

    @classmethod
    def from_dict(cls, d: Mapping) -> ExitType:
        try:
            return cls(str(d["name"]), tuple(d["hidden"]), str(d.get("token_pool", DEFAULT_TOKEN_POOL)))
        except (KeyError, TypeError) as exc:
            raise ExtractError(f"bad exit type entry {d!r}: needs name and hidden") from exc


PAPER_EXIT_TYPES: tuple[ExitType, ...] = (
    ExitType("mlp1", ()),
    ExitType("mlp3x500", (500, 500)),
    ExitType("mlp3x1000", (1000, 1000)),
    ExitType("mlp5x500", (500,) * 4),
    ExitType("mlp5x1000", (1000,) * 4),
)
"""The five exits of paper Sec. VI-B, from small to large."""


def parse_exit_types(spec: str | Sequence[str | ExitType]) -> tuple[ExitType, ...]:
    """Exit types from ``"paper"``, ``"mlp1,mlp3x500"`` or a list of names / ExitTypes."""
    if isinstance(spec, str):
        if spec.strip() == "paper":
            return PAPER_EXIT_TYPES
        spec = [s for s in spec.split(",") if s.strip()]
    types = tuple(t if isinstance(t, ExitType) else ExitType.parse(t) for t in spec)
    if not types:
        raise ExtractError("no exit types given")
    names = [t.name for t in types]
    if len(set(names)) != len(names):
        raise ExtractError(f"exit type names are not unique: {names}")
    return types


class ExitHead(nn.Module):
    """One exit f_{n,k}: global pooling of o_p by its layout, then an MLP.

    Parameters
    ----------
    in_channels : int
        Channels C of the feature o_p it reads (``PositionInfo.channels``).
    num_classes : int
        Logits it produces (those of the original head).
    exit_type : ExitType
        The MLP's shape and, for tokens, its pooling.
    layout : FeatureLayout
        Layout of o_p (``PositionInfo.layout``): NCHW maps are averaged over
        space, NLC tokens over the patch tokens or reduced to the class token.

    Raises
    ------
    ExtractError
        Class-token pooling at a position whose tokens no class token leads
        (or at a feature map).
    """

    def __init__(self, in_channels: int, num_classes: int, exit_type: ExitType, layout: FeatureLayout = NCHW):
        super().__init__()
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.exit_type = exit_type
        self.layout = layout
        layout.check_pool(exit_type.token_pool, f"exit type {exit_type.name!r}")
        widths = [self.in_channels, *exit_type.hidden, self.num_classes]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            if i > 0:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(widths[i], widths[i + 1]))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` map or ``[B, L, C]`` tokens (as the layout says) -> ``[B, num_classes]`` logits."""
        return self.mlp(self.layout.pool(features, self.exit_type.token_pool))

    def extra_repr(self) -> str:
        return f"type={self.exit_type.name}, layout={self.layout.describe()}"


def _exit_head(position: PositionInfo, num_classes: int, exit_type: ExitType) -> ExitHead:
    try:
        return ExitHead(position.channels, num_classes, exit_type, position.layout)
    except ExtractError as exc:
        raise ExtractError(f"position {position.name!r}: {exc}") from exc


class ExitBank(nn.Module):
    """All candidate exits f_{p,k} at all early positions p (K types, not all present everywhere).

    Parameters
    ----------
    positions : sequence of PositionInfo
        The P early positions of the backbone (``backbone.positions``).
    exit_types : sequence of ExitType, or a length-P sequence of such sequences
        The same types at every position, or a list per position (an empty
        list leaves a position without exits). The bank's K types are the
        union, in order of first appearance.
    num_classes : int
        Logits every exit produces.
    types : sequence of ExitType, optional
        The K exit types in index order, when some type has no exit at any
        position (a bank pruned to the exits a deployment uses keeps the
        type indices of the bank it came from). Default: the union above.

    Attributes
    ----------
    positions : list of PositionInfo
    types : tuple of ExitType
        The K exit types (index k).
    num_classes : int
    """

    def __init__(
        self,
        positions: Sequence[PositionInfo],
        exit_types: Sequence[ExitType] | Sequence[Sequence[ExitType]],
        num_classes: int,
        types: Sequence[ExitType] | None = None,
    ):
        super().__init__()
        declared = None if types is None else tuple(types)  # `types` names each position's list below
        positions = list(positions)
        if not positions:
            raise ExtractError("an exit bank needs at least one position")
        if exit_types and all(isinstance(t, ExitType) for t in exit_types):
            per_position = [tuple(exit_types)] * len(positions)
        else:
            per_position = [tuple(ts) for ts in exit_types]
            if len(per_position) != len(positions):
                raise ExtractError(f"{len(per_position)} per-position exit type lists for {len(positions)} positions")
        union: dict[str, ExitType] = {}
        for p, types in enumerate(per_position):
            for t in types:
                if not isinstance(t, ExitType):
                    raise ExtractError(f"position {positions[p].name!r}: {t!r} is not an ExitType")
                if union.setdefault(t.name, t) != t:
                    raise ExtractError(f"two exit types named {t.name!r} differ: {union[t.name]} vs {t}")
            if len({t.name for t in types}) != len(types):
                raise ExtractError(f"position {positions[p].name!r}: exit types repeat: {[t.name for t in types]}")
        if declared is not None:
            listed = {t.name: t for t in declared}
            stray = [str(t) for name, t in union.items() if listed.get(name) != t]
            if stray or len(listed) != len(declared):
                raise ExtractError(f"types={[str(t) for t in declared]} must name each exit type once, {stray} included")
        elif not union:
            raise ExtractError("the exit bank has no exits at all")
        self.positions = positions
        self.types = declared if declared is not None else tuple(union.values())
        self.num_classes = int(num_classes)
        self.heads = nn.ModuleList(
            nn.ModuleDict({t.name: _exit_head(pos, num_classes, t) for t in types})
            for pos, types in zip(positions, per_position)
        )

    @property
    def exit_types(self) -> tuple[str, ...]:
        """Names of the K exit types (cache column order)."""
        return tuple(t.name for t in self.types)

    @property
    def num_positions(self) -> int:
        return len(self.positions)

    @property
    def available(self) -> np.ndarray:
        """bool ``[P, K]``: whether exit (p, k) exists."""
        out = np.zeros((len(self.positions), len(self.types)), dtype=bool)
        for p, heads in enumerate(self.heads):
            for k, name in enumerate(self.exit_types):
                out[p, k] = name in heads
        return out

    def _type_name(self, k: int | str) -> str:
        if isinstance(k, str):
            if k not in self.exit_types:
                raise KeyError(f"no exit type {k!r}; types: {self.exit_types}")
            return k
        return self.exit_types[k]

    def __getitem__(self, key: tuple[int, int | str]) -> ExitHead:
        """The exit at ``(p, k)``, ``k`` an index into :attr:`exit_types` or a type name."""
        p, k = key
        name = self._type_name(k)
        if name not in self.heads[p]:
            raise KeyError(f"no exit {name!r} at position {p} ({self.positions[p].name})")
        return self.heads[p][name]

    def __contains__(self, key: tuple[int, int | str]) -> bool:
        p, k = key
        try:
            return self._type_name(k) in self.heads[p]
        except (KeyError, IndexError):
            return False

    def exits(self) -> Iterator[tuple[int, int, ExitHead]]:
        """``(p, k, exit)`` for every present exit, position-major."""
        index = {name: k for k, name in enumerate(self.exit_types)}
        for p, heads in enumerate(self.heads):
            for name, head in heads.items():
                yield p, index[name], head

    def forward_position(self, p: int, features: torch.Tensor) -> dict[int, torch.Tensor]:
        """Logits of every exit at position ``p`` from its feature map: ``{k: [B, num_classes]}``."""
        index = {name: k for k, name in enumerate(self.exit_types)}
        return {index[name]: head(features) for name, head in self.heads[p].items()}

    def forward(self, features: Sequence[torch.Tensor]) -> dict[tuple[int, int], torch.Tensor]:
        """Logits of every exit from the P early feature maps.

        Parameters
        ----------
        features : sequence of Tensor
            o_0 .. o_{P-1}, as returned by ``SegmentedBackbone.forward_features``.

        Returns
        -------
        dict
            ``(p, k) -> [B, num_classes]`` logits (y~_{p,k}, Eq. 1) for every
            present exit, position-major.
        """
        if len(features) != len(self.positions):
            raise ExtractError(f"got {len(features)} feature maps for {len(self.positions)} positions")
        out = {}
        for p, feature in enumerate(features):
            for k, logits in self.forward_position(p, feature).items():
                out[(p, k)] = logits
        return out

    def spec(self) -> dict:
        """JSON-able description from which :meth:`from_spec` rebuilds the bank (weights aside)."""
        return {
            "format": SPEC_FORMAT,
            "version": SPEC_VERSION,
            "num_classes": self.num_classes,
            "exit_types": [t.to_dict() for t in self.types],
            "positions": [pos.to_dict() for pos in self.positions],
            "available": self.available.tolist(),
        }

    @classmethod
    def from_spec(cls, spec: Mapping) -> ExitBank:
        """An untrained bank with the architecture in ``spec`` (see :meth:`spec`)."""
        if spec.get("format") != SPEC_FORMAT or spec.get("version") != SPEC_VERSION:
            raise ExtractError(
                f"not an exit bank spec (format {spec.get('format')!r} version {spec.get('version')!r}; "
                f"expected {SPEC_FORMAT!r} version {SPEC_VERSION})"
            )
        try:
            types = [ExitType.from_dict(t) for t in spec["exit_types"]]
            positions = [PositionInfo.from_dict(p) for p in spec["positions"]]
            available = np.asarray(spec["available"], dtype=bool)
            num_classes = int(spec["num_classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExtractError(f"exit bank spec is missing or has a bad field: {exc}") from exc
        if available.shape != (len(positions), len(types)):
            raise ExtractError(
                f"exit bank spec: 'available' has shape {available.shape}, expected {(len(positions), len(types))}"
            )
        per_position = [[t for t, ok in zip(types, row) if ok] for row in available]
        return cls(positions, per_position, num_classes, types=types)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``{"spec", "state_dict"}`` with ``torch.save``, atomically.

        Through :func:`extract.train.atomic_torch_save`, so equal banks give
        byte-identical files.
        """
        from .train import atomic_torch_save  # lazily, as in rundir: importing exits stays light

        atomic_torch_save({"spec": self.spec(), "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ExitBank:
        """Rebuild a bank written by :meth:`save` (strict state dict load)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ExtractError(f"exit bank file {path!r} does not exist")
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unreadable for whatever reason: one clear message
            raise ExtractError(f"exit bank file {path!r} is not readable: {exc}") from exc
        if not isinstance(obj, Mapping) or "spec" not in obj or "state_dict" not in obj:
            raise ExtractError(f"exit bank file {path!r} lacks 'spec' and 'state_dict'")
        bank = cls.from_spec(obj["spec"])
        try:
            bank.load_state_dict(obj["state_dict"], strict=True)
        except RuntimeError as exc:
            raise ExtractError(f"exit bank file {path!r}: weights do not fit its spec: {exc}") from exc
        return bank.to(map_location)

    def subset(self, keep) -> ExitBank:
        """A bank of the exits ``(p, k)`` in ``keep`` only, sharing their modules (no copy).

        The K exit types and their indices stay those of this bank, so a
        configuration indexes both alike.
        """
        keep = {(int(p), int(k)) for p, k in keep}
        missing = sorted(key for key in keep if key not in self)
        if missing:
            raise ExtractError(f"exits {missing} (position, type) are not in the bank")
        per_position = [[t for k, t in enumerate(self.types) if (p, k) in keep] for p in range(len(self.positions))]
        bank = ExitBank(self.positions, per_position, self.num_classes, types=self.types)
        for p, k in keep:
            name = self.exit_types[k]
            bank.heads[p][name] = self.heads[p][name]
        return bank.train(self.training)

    def extra_repr(self) -> str:
        return f"positions={len(self.positions)}, exit_types={self.exit_types}, num_classes={self.num_classes}"
