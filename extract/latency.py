"""Measured latency profile: per-segment and per-exit wall-clock time as a ``dyce_search.Costs``.

MACs are a proxy for run time (paper Sec. V-A.2). On a given machine the
search can instead minimise measured time: this module times every backbone
segment alone (S_n before normalisation, the last one with the head) and every
exit (Delta_{n,k}) at a given batch size, and writes the result as a
``dyce-costs`` JSON profile (unit ``"ms"``, per sample) that
``dyce_search.run(..., costs=Costs.load(path))`` and ``python -m dyce_search
--costs`` accept in place of the cache's MACs.

An exit's time covers exactly what :class:`extract.runtime.DyCEModel` runs per
enabled exit (:func:`extract.runtime.exit_step`: the exit, the float32
softmax, the threshold test and finding the rows that leave), so a profile
prices the decision overhead as well as the exit's arithmetic. Not priced:
gathering the staying rows after a partial exit (an ``index_select`` whose
cost depends on how many leave; zero at batch size 1).

``python -m extract.latency RUN_DIR --out profile.json [--batch-size B] [--device D]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dyce_search._io import check_writable, write_text_atomic
from dyce_search._logging import add_verbosity, setup_logging
from dyce_search.costs import Costs
from dyce_search.errors import CliParser, run_cli

from .runtime import exit_step

__all__ = ["measure_costs", "time_call", "save_profile", "main"]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device, *, warmup: int = 5, repeats: int = 30) -> float:
    """Median wall-clock milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    On CUDA the device is synchronised before and after every call, so the
    time covers the kernels and not only their launch.
    """
    device = torch.device(device)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    return torch.device("cpu")


@torch.inference_mode()
def measure_costs(
    backbone: nn.Module,
    exits: nn.Module,
    *,
    batch_size: int = 1,
    example: torch.Tensor | None = None,
    warmup: int = 5,
    repeats: int = 30,
    progress: bool = False,
) -> Costs:
    """Time every segment and every exit on the device the modules are on.

    Parameters
    ----------
    backbone : extract.backbones.SegmentedBackbone
    exits : extract.exits.ExitBank
    batch_size : int
        Samples per timed call (B); the profile holds milliseconds per sample
        (median time of one call / B).
    example : Tensor [B, ...], optional
        The input batch; default standard-normal noise of ``backbone.input_size``
        (segment and exit times depend on shapes, not values).
    warmup, repeats : int
        Untimed calls before, and timed calls per measurement (the median is kept).
    progress : bool
        tqdm bar over the P + 1 segments and the exits.

    Returns
    -------
    dyce_search.Costs
        ``segment [P+1]`` (the last with the head) and ``exit [P, K]`` (NaN
        where the bank has no exit) in ``unit="ms"`` per sample, with the
        backbone's position and exit type names.
    """
    from tqdm.auto import tqdm

    device = _device_of(backbone)
    backbone.eval()
    exits.eval()
    if example is None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        example = torch.randn(batch_size, *backbone.input_size, device=device)
    example = example.to(device)
    batch = int(example.shape[0])
    n_early = len(backbone.positions)
    names = tuple(exits.exit_types)
    work = n_early + 1 + sum(1 for _ in exits.exits())
    bar = tqdm(total=work, desc="latency", unit="module", disable=not progress)

    segment_ms = np.empty(n_early + 1)
    features = []
    h = example
    for p in range(n_early + 1):
        inp = h
        if p < n_early:
            run = lambda inp=inp, p=p: backbone.segments[p](inp)  # noqa: E731
        else:
            run = lambda inp=inp: backbone.head(backbone.segments[n_early](inp))  # noqa: E731
        segment_ms[p] = time_call(run, device, warmup=warmup, repeats=repeats) / batch
        h = backbone.segments[p](inp) if p < n_early else None
        if p < n_early:
            features.append(h)
        bar.update()

    exit_ms = np.full((n_early, len(names)), np.nan)
    for p, k, module in exits.exits():
        # threshold +inf: every sample stays; selecting the staying rows after a partial exit
        # depends on how many leave and is not priced here
        step = lambda m=module, f=features[p]: exit_step(m, f, float("inf"))  # noqa: E731
        exit_ms[p, k] = time_call(step, device, warmup=warmup, repeats=repeats) / batch
        bar.update()
    bar.close()
    return Costs(
        segment_ms,
        exit_ms,
        unit="ms",
        positions=tuple(p.name for p in backbone.positions),
        exit_types=names,
        backbone=getattr(backbone, "name", None),
    )


def save_profile(costs: Costs, path, *, measurement: dict | None = None) -> None:
    """Write ``costs`` as a ``dyce-costs`` JSON document, atomically (``dyce_search._io.atomic_target``).

    ``measurement`` (device, batch size, repeats, ...) is stored under an extra
    ``"measurement"`` key for provenance; ``Costs.load`` ignores it.
    """
    doc = costs.to_dict()
    if measurement:
        doc["measurement"] = measurement
    write_text_atomic(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="python -m extract.latency",
        description="Measure per-segment and per-exit latency of a run directory and save it as a "
        "dyce-costs profile (ms per sample) for `dyce_search --costs`.",
    )
    parser.add_argument("run_dir", help="run directory written by `python -m extract`")
    parser.add_argument("--out", required=True, help="profile JSON to write")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per timed call (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per measurement (default 5)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per measurement; median kept (default 30)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_verbosity(parser, quiet="no progress bar and no summary line")
    return parser


def main(argv=None) -> int:
    """Entry point of ``python -m extract.latency``: 0, 2 after bad input (one ``error:`` line), 130 after Ctrl-C."""
    args = _parser().parse_args(argv)
    setup_logging(args)
    return run_cli(_run, args)


def _run(args) -> int:
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        raise ValueError("--batch-size and --repeats must be >= 1, --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    check_writable(args.out, option="--out")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available")
    from .rundir import load_run

    from .fingerprint import run_record

    backbone, bank, info = load_run(args.run_dir)
    # the record ties the profile to this run's weights: Costs.check refuses it for caches of other runs
    record = run_record(backbone, bank, info)
    backbone.to(device)
    bank.to(device)
    costs = measure_costs(
        backbone, bank, batch_size=args.batch_size, warmup=args.warmup, repeats=args.repeats,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    costs = dataclasses.replace(costs, provenance=record)
    save_profile(
        costs,
        args.out,
        measurement={
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "statistic": "median",
            "torch": torch.__version__,
        },
    )
    # a status line (stderr through logging); -q silences it
    logging.getLogger(__name__).info(
        "wrote %s: %d segments (%.4g ms/sample in all), %d exits, batch %d on %s",
        args.out, costs.n_positions + 1, costs.total, int(np.isfinite(costs.exit).sum()), args.batch_size, device,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
