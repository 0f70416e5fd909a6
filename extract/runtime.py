"""The run-time DyCE model: Algorithm 1 over a frozen segmented backbone.

A :class:`DyCEModel` holds one segmented backbone, the trained exits its
configurations use (:meth:`DyCEModel.load` drops the others) and a set of searched configurations G = {k, t}. One configuration is
active at a time; :meth:`DyCEModel.use` switches to another in O(1) by
swapping a reference to a precomputed execution plan (which exit module runs
after which segment, and its threshold). Weights are never copied or reloaded.

Exit rule (why run time equals the simulation)
----------------------------------------------
The rule is defined once, in :mod:`dyce_search.exit_rule`. Its confidence is
computed by :func:`top1` (logits cast to float32, softmax over the classes,
max), the one function the recorder (``extract.record``), this model and the
latency profiler share. The model compares it in float32 against
``t32 = float32_threshold(t_p)``, the smallest float32 >= t_p, precomputed per
configuration: for any float32 c, ``c >= t32`` holds exactly when
``float64(c) >= t_p``, the comparison ``dyce_search`` applies to the recorded
value. Run time and simulation can therefore only differ where the
confidence itself differs in its last bits (the exit computed on a different
batch composition) and lies within float precision of a threshold.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from dyce_search.errors import DyceError, ResultError
from dyce_search.exit_rule import float32_threshold

logger = logging.getLogger(__name__)

__all__ = ["DyCEModel", "UnknownConfigError", "check_result_fits", "exit_step", "module_size", "top1", "used_exits"]


class UnknownConfigError(DyceError, LookupError):
    """``DyCEModel.use`` was asked for a configuration that is not stored."""


def top1(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 class and confidence max(y~) of each row, as :mod:`dyce_search.exit_rule` defines them.

    The one torch implementation of the confidence: the recorder stores it,
    :func:`exit_step` compares it with the threshold.

    Parameters
    ----------
    logits : Tensor [..., num_classes], any floating dtype

    Returns
    -------
    pred : int32 Tensor [...]
        Index of the largest softmax entry.
    conf : float32 Tensor [...]
        The largest softmax probability, the softmax taken in float32.
    """
    conf, pred = torch.softmax(logits.float(), dim=-1).max(dim=-1)
    return pred.to(torch.int32), conf


@dataclass(frozen=True)
class _Stage:
    """The enabled exit after one early position of one configuration."""

    position: int
    exit: nn.Module
    threshold: float  # float32_threshold(t_p): exactly representable in float32


def exit_step(exit_module: nn.Module, features: torch.Tensor, threshold: float):
    """One enabled exit of Algorithm 1 (lines 5-6) on the samples still in flight.

    Shared by :class:`DyCEModel` and the latency profiler, so that a measured
    exit cost covers exactly the work the run-time model does per exit.

    Parameters
    ----------
    exit_module : the exit f_{n,k}
    features : Tensor [B, ...], o_n of the samples still in flight
    threshold : float, ``dyce_search.exit_rule.float32_threshold(t)`` (exact in float32)

    Returns
    -------
    logits : Tensor [B, num_classes]
    leave : int64 Tensor [L], rows of ``features`` whose confidence >= threshold
    stay : int64 Tensor [B - L], the other rows in order; None when L = 0
        (every row stays, nothing to select)
    """
    logits = exit_module(features)
    confident = top1(logits)[1] >= threshold
    leave = torch.nonzero(confident).squeeze(1)
    # One host sync (the nonzero) per exit; the complement only when someone left.
    stay = torch.nonzero(~confident).squeeze(1) if leave.numel() else None
    return logits, leave, stay


class DyCEModel(nn.Module):
    """Early-exit inference with switchable configurations (paper Sec. III, Algorithm 1).

    Parameters
    ----------
    backbone : extract.backbones.SegmentedBackbone
        Frozen pretrained model split into ``segments`` (P+1 modules) and ``head``.
    exits : extract.exits.ExitBank
        The trained exits f_{n,k} at the P early positions.
    configs : dyce_search.SearchResult or sequence of dyce_search.Config
        The configurations G = {k, t} to switch between. With a SearchResult,
        exit-type indices refer to ``metadata["exit_types"]`` (matched to the
        bank by name) and ``table["lambda"]`` gives each configuration's lambda.
        With plain Configs, indices refer to the bank's exit types.

    Notes
    -----
    The model is put in eval mode (BatchNorm statistics are frozen, as when the
    exits were recorded). After construction the most accurate stored
    configuration is active (never the cheapest; with plain Configs, whose
    accuracy is unknown, the original model); ``use()`` without arguments runs
    the original model (no early exit).
    """

    def __init__(self, backbone: nn.Module, exits: nn.Module, configs):
        super().__init__()
        self.backbone = backbone
        self.exits = exits
        self._positions = tuple(p.name for p in backbone.positions)
        self._bank_types = _bank_exit_types(exits)
        self._result = configs if hasattr(configs, "choose") else None
        #: provenance record of the run (set by :meth:`load`; None when built from modules)
        self.provenance: dict | None = None
        configs, lambdas, type_names = _unpack_configs(configs, self._bank_types)
        self._configs = tuple(configs)
        self._lambdas = lambdas
        self.selection_basis = None
        # index into the result's exit types -> index into the bank's exit types
        type_map = _match_exit_types(type_names, self._bank_types)
        self._plans = tuple(self._plan(i, c, type_map) for i, c in enumerate(self._configs))
        self._no_exit_plan = (None,) * len(self._positions)
        self._active = None
        self._active_plan = self._no_exit_plan
        if self._result is not None and self._configs:
            self.use(self._result.most_accurate())
        self.eval()

    # ------------------------------------------------------------------ build
    def _plan(self, index: int, config, type_map: Sequence[int]) -> tuple:
        n_pos = len(self._positions)
        if config.n_positions != n_pos:
            raise ResultError(
                f"configuration {index} has {config.n_positions} positions, the backbone has {n_pos} "
                f"({', '.join(self._positions)})"
            )
        stages = []
        for p in range(n_pos):
            k = int(config.exit_types[p])
            if k < 0:
                stages.append(None)
                continue
            if k >= len(type_map):
                raise ResultError(
                    f"configuration {index} enables exit type {k} at position {self._positions[p]!r}, "
                    f"but only {len(type_map)} exit types are stored"
                )
            bank_k = type_map[k]
            module = _bank_exit(self.exits, p, bank_k)
            if module is None:
                raise ResultError(
                    f"configuration {index} enables exit type {self._bank_types[bank_k]!r} at position "
                    f"{self._positions[p]!r}, but the exit bank has no such exit there"
                )
            stages.append(_Stage(p, module, float32_threshold(config.thresholds[p])))
        return tuple(stages)

    @classmethod
    def load(cls, run_dir, results, *, device="cpu", allow_mixed: bool = False,
             all_exits: bool = False) -> "DyCEModel":
        """Load a run directory (``python -m extract``) and its search results.

        Parameters
        ----------
        run_dir : path of the run directory
        results : path of a saved SearchResult (.json / .parquet), or a SearchResult
        device : where to put the model
        allow_mixed : bool
            Accept results searched on a cache of another run (other backbone
            weights, exits or preprocessing), with a logged warning.
        all_exits : bool
            Keep every exit of the bank, not only those some stored
            configuration enables (the default keeps only those: a full bank
            of the paper's five types weighs several backbones).

        Returns
        -------
        DyCEModel
            Its ``provenance`` holds the run's record (digests of the loaded
            backbone and of the whole exit bank, taken before the unused
            exits are dropped, ``dyce_search.provenance``).

        Raises
        ------
        ResultError
            If the results were searched for another backbone, other positions,
            other exit types or another number of classes, or on a cache that
            another run recorded: the digests of the loaded weights are
            compared with the record the search cache carried.
        """
        from dyce_search import load_result
        from dyce_search.provenance import Origin, check_combinable

        from .fingerprint import run_record
        from .rundir import load_run

        result = results if hasattr(results, "configs") else load_result(results)
        backbone, bank, info = load_run(run_dir, map_location=device)
        source = str(results) if isinstance(results, (str, os.PathLike)) else "the search result"
        check_result_fits(result.metadata, backbone, bank, source=source, run=str(run_dir))
        # digest the whole bank: the record of the search cache describes all of it
        record = run_record(backbone, bank, info)
        check_combinable(
            Origin(f"the run {str(run_dir)!r}", record, None, None, info.backbone),
            Origin.of_result(result.metadata, f"the search cache of {source}"),
            allow_mixed=allow_mixed, error=ResultError,
        )
        if not all_exits:
            used = used_exits(result, bank)
            total = sum(1 for _ in bank.exits())
            full = module_size(bank)
            bank = bank.subset(used)
            logger.info("%s: keeping the %d of %d exits the configurations use (%d of %d exit parameters)",
                        run_dir, len(used), total, module_size(bank)[0], full[0])
        model = cls(backbone, bank, result)
        model.provenance = record
        return model

    @classmethod
    def load_bundle(cls, path, *, device="cpu") -> "DyCEModel":
        """Load a deployment bundle written by :func:`extract.bundle.export_bundle` (no pickle).

        Its ``provenance`` is the record of the run it was exported from; the
        bundle's own tensors are checked against the digests in its manifest
        (``extract.bundle``), so an edited or truncated bundle is refused with
        an ``ExtractError``.
        """
        from .bundle import load_bundle

        return load_bundle(path, device=device)

    def deployed_size(self) -> dict:
        """What this model holds: parameters and bytes (parameters and buffers) of backbone and exits.

        Returns
        -------
        dict
            ``{"parameters", "bytes", "backbone": {"parameters", "bytes"},
            "exits": {"count", "parameters", "bytes"}}``.
        """
        (bp, bb), (ep, eb) = module_size(self.backbone), module_size(self.exits)
        return {
            "parameters": bp + ep, "bytes": bb + eb,
            "backbone": {"parameters": bp, "bytes": bb},
            "exits": {"count": sum(1 for _ in self.exits.exits()), "parameters": ep, "bytes": eb},
        }

    # ------------------------------------------------------------ switching
    @property
    def configs(self) -> tuple:
        """The stored configurations (dyce_search.Config)."""
        return self._configs

    @property
    def result(self):
        """The SearchResult the configurations come from; None when built from plain Configs."""
        return self._result

    @property
    def lambdas(self) -> tuple | None:
        """lambda of each stored configuration, or None when built from plain Configs."""
        return self._lambdas

    @property
    def active(self) -> int | None:
        """Index of the active configuration; None when running the original model."""
        return self._active

    @property
    def positions(self) -> tuple:
        """Names of the P early positions."""
        return self._positions

    def use(self, index: int | None = None, lam: float | None = None, *, max_drop: float | None = None,
            max_cost: float | None = None) -> "DyCEModel":
        """Activate a stored configuration by index, by lambda or by budget, in O(1).

        Only a reference to a precomputed plan is swapped: no weight is copied,
        moved or reloaded. With no argument, the original model runs (all
        early exits disabled). Negative indices count from the end. Returns
        ``self``, so ``model.use(lam=0.3)(x)`` works.

        ``max_drop`` / ``max_cost`` pick the cheapest configuration whose drop
        fits, or the most accurate whose cost fits
        (:meth:`dyce_search.SearchResult.choose`): by the certified figures
        of a :func:`dyce_search.select` result, else by the search split's
        (in-sample) figures; :attr:`selection_basis` says which, and the
        choice is logged.

        Raises
        ------
        UnknownConfigError
            If ``index`` is out of range, no stored configuration has ``lam``
            (the message lists what is stored), or none fits the budget.
        """
        given = [a is not None for a in (index, lam, max_drop, max_cost)]
        if sum(given) > 1:
            raise ValueError("pass at most one of index, lam, max_drop and max_cost")
        if max_drop is not None or max_cost is not None:
            if self._result is None:
                raise UnknownConfigError("the configurations were given without their metrics; select them by index")
            try:
                index, basis = self._result.choose(max_drop=max_drop, max_cost=max_cost)
            except ResultError as e:
                raise UnknownConfigError(str(e)) from None
            self.selection_basis = basis
            budget = f"max_drop={max_drop}" if max_drop is not None else f"max_cost={max_cost}"
            logger.info("%s: configuration %d by the %s figures", budget, index, basis)
        elif lam is not None:
            index = self._index_of_lambda(lam)
            self.selection_basis = None
        if index is None:
            self._active, self._active_plan = None, self._no_exit_plan
            return self
        n = len(self._plans)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise UnknownConfigError(
                f"no configuration {index!r}: {n} are stored"
                + (f" (indices 0..{n - 1})" if n else "")
            )
        index = int(index) % n
        self._active, self._active_plan = index, self._plans[index]
        return self

    def _index_of_lambda(self, lam: float) -> int:
        if self._lambdas is None:
            raise UnknownConfigError("the configurations were given without lambdas; select them by index")
        stored = np.asarray(self._lambdas, dtype=np.float64)
        # the tolerance of SearchResult.config, so both select the same row
        hits = np.flatnonzero(np.abs(stored - float(lam)) <= 1e-9)
        if hits.size != 1:
            listed = ", ".join(f"{v:g}" for v in stored)
            what = "no" if hits.size == 0 else f"{hits.size} (ambiguous)"
            raise UnknownConfigError(f"{what} stored configuration for lambda={lam:g}; stored lambdas: [{listed}]")
        return int(hits[0])

    # -------------------------------------------------------------- forward
    @torch.inference_mode()
    def forward(self, x: torch.Tensor):
        """Algorithm 1 on a batch.

        After segment n, the active configuration's exit f_{n,k_n} (if any) runs
        on the samples still in flight; those with max softmax >= t_n leave with
        that exit's logits, the rest go on as a smaller batch. Samples that pass
        every early exit get the original head's logits.

        Parameters
        ----------
        x : Tensor [B, ...], a batch of inputs for the backbone

        Returns
        -------
        logits : Tensor [B, num_classes], in the input order
        exit_position : int64 Tensor [B], the 0-based early position each sample
            left at, or P for the head
        """
        segments = self.backbone.segments
        n_early = len(self._positions)
        batch = x.shape[0]
        exit_position = torch.full((batch,), n_early, dtype=torch.int64, device=x.device)
        logits_out = None
        rows = torch.arange(batch, device=x.device)  # original row of each in-flight sample
        h = x
        for p, stage in enumerate(self._active_plan):
            h = segments[p](h)
            if stage is None:
                continue
            logits, leave, stay = exit_step(stage.exit, h, stage.threshold)
            if logits_out is None:
                logits_out = logits.new_empty((batch, logits.shape[1]))
            if stay is None:  # nobody leaves here
                continue
            left = rows[leave]
            logits_out[left] = logits[leave].to(logits_out.dtype)
            exit_position[left] = p
            if stay.numel() == 0:  # everybody has left: skip the remaining segments
                return logits_out, exit_position
            h = h.index_select(0, stay)
            rows = rows[stay]
        logits = self.backbone.head(segments[n_early](h))
        if logits_out is None:
            return logits, exit_position
        logits_out[rows] = logits.to(logits_out.dtype)
        return logits_out, exit_position

    def extra_repr(self) -> str:
        return f"positions={len(self._positions)}, configs={len(self._configs)}, active={self._active}"


# ---------------------------------------------------------------- helpers
def _unpack_configs(configs, bank_types):
    """-> (list[Config], lambdas tuple or None, exit-type names the indices refer to)."""
    if hasattr(configs, "configs") and hasattr(configs, "table"):
        result = configs
        lambdas = tuple(float(v) for v in result.table["lambda"])
        names = result.metadata.get("exit_types")
        names = tuple(names) if names is not None else tuple(bank_types)
        return list(result.configs), lambdas, names
    return list(configs), None, tuple(bank_types)


def used_exits(configs, bank) -> set:
    """The exits ``(p, k)`` of ``bank`` that some configuration enables (k indexes the bank's types).

    ``configs`` as :class:`DyCEModel` takes them: a SearchResult (exit types
    matched by name) or plain Configs (indices into the bank's types).
    """
    configs, _, names = _unpack_configs(configs, _bank_exit_types(bank))
    type_map = _match_exit_types(names, _bank_exit_types(bank))
    used = set()
    for config in configs:
        for p, k in enumerate(config.exit_types):
            # an index out of range is left to DyCEModel, whose message names the configuration
            if 0 <= int(k) < len(type_map) and p < bank.num_positions:
                used.add((p, type_map[int(k)]))
    return used


def module_size(module: nn.Module) -> tuple[int, int]:
    """(parameters, bytes of parameters and buffers) of a module; tensors it shares count once."""
    seen, params, nbytes = set(), 0, 0
    for is_param, tensors in ((True, module.parameters()), (False, module.buffers())):
        for t in tensors:
            if id(t) in seen:
                continue
            seen.add(id(t))
            params += t.numel() if is_param else 0
            nbytes += t.numel() * t.element_size()
    return params, nbytes


def _match_exit_types(names, bank_types) -> list:
    missing = [n for n in names if n not in bank_types]
    if missing:
        raise ResultError(
            f"exit types {missing} of the configurations are not in the exit bank (bank has {list(bank_types)})"
        )
    return [bank_types.index(n) for n in names]


def check_result_fits(metadata: dict, backbone, bank, *, source="the search result", run="the run") -> None:
    """Raise ResultError unless a search result's metadata matches a backbone and exit bank.

    Compares the early position names, the exit type names, the number of
    classes and (where both are known) the backbone name.
    """
    expected = {
        "positions": [p.name for p in backbone.positions],
        "exit_types": list(_bank_exit_types(bank)),
        "num_classes": int(backbone.num_classes),
    }
    name = getattr(backbone, "name", None)
    if name is not None and metadata.get("backbone") is not None:
        expected["backbone"] = name
    for key, want in expected.items():
        if key not in metadata:
            raise ResultError(f"{source}: metadata has no {key!r}; cannot check it was searched for {run}")
        stored = metadata[key]
        stored = list(stored) if isinstance(stored, (list, tuple, np.ndarray)) else stored
        if key == "num_classes":
            stored = int(stored)
        if stored != want:
            raise ResultError(f"{source} was searched for {key}={stored!r}, but {run} has {key}={want!r}")


def _bank_exit_types(bank) -> tuple:
    return tuple(bank.exit_types)


def _bank_exit(bank, position: int, type_index: int):
    """Exit (p, k) of an ``ExitBank``, or None where the bank has none."""
    return bank[position, type_index] if (position, type_index) in bank else None
