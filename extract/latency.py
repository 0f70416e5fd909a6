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

Each module is timed with ``torch.utils.benchmark.Timer.blocked_autorange``;
the profile keeps the median and records the interquartile range of every
entry next to it (``measurement["spread"]``, which ``Costs.load`` ignores).

``python -m extract.latency RUN_DIR --out profile.json [--batch-size B] [--device D] [--min-run-time S]``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dyce_search._io import check_writable, write_text_atomic
from dyce_search._logging import add_verbosity, setup_logging
from dyce_search.costs import Costs
from dyce_search.errors import CliParser, run_cli

# torch is imported inside the functions that time something, so that
# ``--help`` and usage errors answer before the seconds torch takes to import.

__all__ = ["Timing", "LatencyProfile", "measure_latency", "measure_costs", "time_call", "save_profile", "main"]

#: Seconds of timed calls per measured module (``blocked_autorange``'s ``min_run_time``).
MIN_RUN_TIME = 0.2


@dataclass(frozen=True)
class Timing:
    """One ``torch.utils.benchmark`` measurement of a call, in milliseconds per call.

    Attributes
    ----------
    median, iqr : float
        Median and interquartile range over the measured blocks, each block's
        time divided by its number of calls.
    blocks, calls_per_block : int
        How many blocks were timed and how many calls each block made.
    """

    median: float
    iqr: float
    blocks: int
    calls_per_block: int


def time_call(fn: Callable[[], object], device="cpu", *, min_run_time: float = MIN_RUN_TIME,
              threads: int | None = None) -> Timing:
    """Time ``fn()`` with ``torch.utils.benchmark.Timer.blocked_autorange``.

    The Timer first grows the calls per block until the timer's own overhead
    is negligible (this doubles as the warm-up), then times blocks until
    ``min_run_time`` seconds are spent. On an accelerator it synchronises
    before reading the clock, so a time covers the kernels, not only their
    launch; ``device`` is made the current one for that.

    ``threads`` is the torch CPU thread count during the measurement; the
    default is the current one (the Timer's own default, 1, would time
    another setting than the one the caller runs with).
    """
    import torch
    from torch.utils import benchmark

    if not min_run_time > 0:
        raise ValueError(f"min_run_time must be positive, got {min_run_time}")
    device = torch.device(device)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads or torch.get_num_threads())
    current = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with current:
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(median=m.median * 1e3, iqr=m.iqr * 1e3, blocks=len(m.times), calls_per_block=int(m.number_per_run))


def _device_of(module):
    import torch

    for t in module.parameters():
        return t.device
    return torch.device("cpu")


@dataclass(frozen=True)
class LatencyProfile:
    """A measured profile: the costs (medians) and their spread, in ms per sample.

    Attributes
    ----------
    costs : dyce_search.Costs
        ``segment [P+1]`` (S_n before normalisation, the last with the head) and
        ``exit [P, K]`` (Delta_{n,k}; NaN where the bank has no exit), median
        time of one call / B, ``unit="ms"``.
    segment_iqr, exit_iqr : float64 [P+1], [P, K]
        Interquartile range of the same measurements / B (NaN where no exit).
    segment_blocks, exit_blocks : float64 [P+1], [P, K]
        Timed blocks behind each entry (NaN where no exit). One block gives an
        IQR of 0, which says nothing: a module slower than ``min_run_time``
        (or that needs more calls per block than fit in it) gets one block.
    min_run_time : float
        Seconds of timed calls per module.
    """

    costs: Costs
    segment_iqr: np.ndarray
    exit_iqr: np.ndarray
    segment_blocks: np.ndarray
    exit_blocks: np.ndarray
    min_run_time: float

    def spread(self) -> dict:
        """The spread as the JSON-ready ``measurement["spread"]`` entry of a saved profile."""
        def rows(table, kind):
            return [[None if np.isnan(v) else kind(v) for v in row] for row in table]

        return {
            "statistic": "iqr",
            "unit": "ms",
            "segment": [float(v) for v in self.segment_iqr],
            "exit": rows(self.exit_iqr, float),
            "blocks": {"segment": [int(v) for v in self.segment_blocks], "exit": rows(self.exit_blocks, int)},
        }


def measure_latency(
    backbone,
    exits,
    *,
    batch_size: int = 1,
    example=None,
    min_run_time: float = MIN_RUN_TIME,
    progress: bool = False,
) -> LatencyProfile:
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
    min_run_time : float
        Seconds of timed calls per module (:func:`time_call`).
    progress : bool
        tqdm bar over the P + 1 segments and the exits.

    Returns
    -------
    LatencyProfile
        The ``dyce_search.Costs`` (``unit="ms"`` per sample, with the
        backbone's position and exit type names) and the spread of each entry.
    """
    import torch
    from tqdm.auto import tqdm

    from .runtime import exit_step

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

    segment = np.empty((3, n_early + 1))  # [median, iqr, blocks] per segment
    exit_ = np.full((3, n_early, len(names)), np.nan)
    with torch.inference_mode():
        features = []
        h = example
        for p in range(n_early + 1):
            inp = h
            if p < n_early:
                run = lambda inp=inp, p=p: backbone.segments[p](inp)  # noqa: E731
            else:
                run = lambda inp=inp: backbone.head(backbone.segments[n_early](inp))  # noqa: E731
            t = time_call(run, device, min_run_time=min_run_time)
            segment[:, p] = t.median / batch, t.iqr / batch, t.blocks
            h = backbone.segments[p](inp) if p < n_early else None
            if p < n_early:
                features.append(h)
            bar.update()

        for p, k, module in exits.exits():
            # threshold +inf: every sample stays; selecting the staying rows after a partial exit
            # depends on how many leave and is not priced here
            step = lambda m=module, f=features[p]: exit_step(m, f, float("inf"))  # noqa: E731
            t = time_call(step, device, min_run_time=min_run_time)
            exit_[:, p, k] = t.median / batch, t.iqr / batch, t.blocks
            bar.update()
    bar.close()
    costs = Costs(
        segment[0],
        exit_[0],
        unit="ms",
        positions=tuple(p.name for p in backbone.positions),
        exit_types=names,
        backbone=getattr(backbone, "name", None),
    )
    return LatencyProfile(costs, segment[1], exit_[1], segment[2], exit_[2], float(min_run_time))


def measure_costs(backbone, exits, **options) -> Costs:
    """The costs of :func:`measure_latency` alone (same options), for callers that do not keep the spread."""
    return measure_latency(backbone, exits, **options).costs


def save_profile(costs: Costs, path, *, measurement: dict | None = None) -> None:
    """Write ``costs`` as a ``dyce-costs`` JSON document, atomically (``dyce_search._io.atomic_target``).

    ``measurement`` (device, threads, batch size, timer settings, the spread
    of every entry: :meth:`LatencyProfile.spread`) is stored under an extra
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
    parser.add_argument("--min-run-time", type=float, default=MIN_RUN_TIME, metavar="SECONDS",
                        help="seconds of timed calls per segment and per exit (torch.utils.benchmark's "
                        f"blocked_autorange; the median is kept, the IQR recorded; default {MIN_RUN_TIME})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_verbosity(parser, quiet="no progress bar and no summary line")
    return parser


def main(argv=None) -> int:
    """Entry point of ``python -m extract.latency``: 0, 2 after bad input (one ``error:`` line), 130 after Ctrl-C."""
    args = _parser().parse_args(argv)
    setup_logging(args)
    return run_cli(_run, args)


def _run(args) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.min_run_time > 0:
        raise ValueError(f"--min-run-time must be positive, got {args.min_run_time}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    check_writable(args.out, option="--out")
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available")
    from .fingerprint import run_record
    from .rundir import load_run

    backbone, bank, info = load_run(args.run_dir)
    # the record ties the profile to this run's weights: Costs.check refuses it for caches of other runs
    record = run_record(backbone, bank, info)
    backbone.to(device)
    bank.to(device)
    profile = measure_latency(
        backbone, bank, batch_size=args.batch_size, min_run_time=args.min_run_time,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    costs = dataclasses.replace(profile.costs, provenance=record)
    save_profile(
        costs,
        args.out,
        measurement={
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "batch_size": args.batch_size,
            "timer": "torch.utils.benchmark.Timer.blocked_autorange",
            "min_run_time": args.min_run_time,
            "statistic": "median",
            "spread": profile.spread(),
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
