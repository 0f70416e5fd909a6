"""Wall-clock speed of the run-time DyCE model (Algorithm 1) against the backbone alone.

For several configurations spread along the Pareto front, measures the time
per sample at batch 1 and batch 64 and prints it next to the predicted cost:

* ``C (MACs)``: Eq. 11 with MACs for the exits the samples actually took
  (equal to the simulation on the recorded cache, see tests/test_runtime.py);
* ``C (ms)``: Eq. 11 with a latency profile measured on this machine at the
  same batch size (``extract.latency``);
* ``time ratio``: measured time / the backbone's measured time;
* ``efficiency``: time saving / MACs saving, (1 - time ratio) / (1 - C (MACs)).
  The goal at batch 1 is >= 0.8: the saved MACs turn into saved time.

Two models:

1. ``digits``: the shipped digits run (data/digits), configurations searched
   with ``dyce_search.run`` on its calibration cache, timed on its test split;
2. ``resnet50``: torchvision's ResNet-50 with random weights and one
   ``mlp1`` exit per position, at ``--size`` px (default 64 to keep a CPU run
   to a few minutes; 224 is the paper's), with synthetic configurations whose
   thresholds are confidence quantiles on a calibration batch of noise, so
   that set fractions of samples leave.

Also times ``DyCEModel.use`` (switching configurations). Results and their
reading: docs/runtime.md.

Usage: ``python benchmarks/runtime.py [--device cpu|cuda] [--size 224] [--repeats 5] [--threads 1]
[--skip-resnet] [--skip-digits]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dyce_search import Config  # noqa: E402
from dyce_search.costs import Costs  # noqa: E402
from dyce_search.evaluation import slot_costs  # noqa: E402
from extract.latency import measure_costs  # noqa: E402
from extract.macs import macs_table  # noqa: E402
from extract.runtime import DyCEModel, top1  # noqa: E402

DIGITS_RUN = ROOT / "data" / "digits"


# ----------------------------------------------------------------- measuring
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_sample(variants: dict, inputs: torch.Tensor, batch: int, repeats: int) -> dict:
    """Median seconds per sample of each ``name -> callable(x)`` over ``inputs`` in batches.

    The variants are timed round-robin within each repeat, so slow drifts of a
    shared machine hit all of them alike.
    """
    device = inputs.device
    chunks = list(torch.split(inputs, batch))
    if len(chunks) > 1 and chunks[-1].shape[0] != batch:
        chunks = chunks[:-1]
    n = sum(c.shape[0] for c in chunks)
    times = {name: [] for name in variants}
    with torch.inference_mode():
        for fn in variants.values():  # warm-up
            fn(chunks[0])
        for _ in range(repeats):
            for name, fn in variants.items():
                _sync(device)
                start = time.perf_counter()
                for c in chunks:
                    fn(c)
                _sync(device)
                times[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(v) for name, v in times.items()}


def exit_positions(model: DyCEModel, index: int, inputs: torch.Tensor) -> np.ndarray:
    """Where each input leaves under configuration ``index`` (P = the head)."""
    with torch.inference_mode():
        return model.use(index)(inputs)[1].cpu().numpy()


def predicted_ratio(config: Config, position: np.ndarray, costs: Costs) -> float:
    """Eq. 11 (C) for samples that left at ``position`` under ``config``."""
    enabled = np.flatnonzero(config.enabled)
    slot_cost = slot_costs(costs, enabled.astype(np.int64), config.exit_types[enabled].astype(np.int64))
    slot = np.searchsorted(np.append(enabled, config.n_positions), position)
    return float(slot_cost[slot].mean() / costs.total)


def macs_costs(backbone, bank, input_size) -> Costs:
    table = macs_table(backbone, bank, input_size=input_size)
    exit_ = np.where(table.available, table.exit_macs, np.nan).astype(np.float64)
    return Costs(table.segment_macs.astype(np.float64), exit_, unit="macs")


def benchmark(name, backbone, bank, configs, labels, inputs, device, *, batches, samples1, repeats, threads, rows):
    """Append one row per (batch size, configuration) to ``rows``."""
    # set here, after the search: numba's OpenMP start-up can reset torch's thread count
    torch.set_num_threads(threads)
    model = DyCEModel(backbone.to(device), bank.to(device), configs)
    inputs = inputs.to(device)
    macs = macs_costs(backbone, bank, tuple(inputs.shape[1:]))
    for batch in batches:
        data = inputs[:samples1] if batch == 1 else inputs
        # the profile at this batch size and input size (the backbone's input_size may differ: --size)
        profile = measure_costs(backbone, bank, example=inputs[:batch], min_run_time=0.2)
        variants = {"backbone": backbone}
        for i in range(len(configs)):
            variants[labels[i]] = lambda x, i=i: model.use(i)(x)
        seconds = time_per_sample(variants, data, batch, repeats)
        for i, label in enumerate(["backbone", *labels]):
            if i == 0:
                c_macs = c_ms = 1.0
            else:
                position = exit_positions(model, i - 1, data)
                c_macs = predicted_ratio(configs[i - 1], position, macs)
                c_ms = predicted_ratio(configs[i - 1], position, profile)
            ratio = seconds[label] / seconds["backbone"]
            eff = (1 - ratio) / (1 - c_macs) if c_macs < 0.999 else float("nan")
            rows.append((name, device.type, batch, label, c_macs, c_ms, ratio, seconds[label] * 1e3, eff))


def switching_time(model: DyCEModel, n: int = 20_000) -> float:
    """Median microseconds of one ``use(i)`` call, cycling through every configuration."""
    k = len(model.configs)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for j in range(n):
            model.use(j % k)
        runs.append((time.perf_counter() - start) / n)
    return statistics.median(runs) * 1e6


# -------------------------------------------------------------------- models
def digits_setup(n_configs: int):
    import dyce_search
    from dyce_search import ExitCache
    from extract.digits import load_splits
    from extract.rundir import load_run

    backbone, bank, _ = load_run(DIGITS_RUN)
    calibration = ExitCache.read(DIGITS_RUN / "cache-calibration.parquet")
    test = ExitCache.read(DIGITS_RUN / "cache-test.parquet")
    result = dyce_search.run(calibration, np.linspace(0.0, 1.0, 41)).pareto()
    # configurations spread along the front by their cost
    rel = result.table["rel_cost"].to_numpy()
    picks = sorted({int(np.argmin(np.abs(rel - q))) for q in np.quantile(rel, np.linspace(0.0, 1.0, n_configs))})
    configs = [result.configs[i] for i in picks]
    labels = [f"lambda={result.lambdas[i]:.3g}" for i in picks]
    split = load_splits()["test"]
    rows = np.searchsorted(split.sample_ids, test.sample)  # cache rows carry scikit-learn sample ids
    images = split.images[torch.from_numpy(rows)]
    return backbone, bank, configs, labels, images


def resnet_setup(size: int, n_test: int, seed: int = 0):
    from extract.backbones import build_backbone
    from extract.exits import ExitBank, ExitType

    torch.manual_seed(seed)
    backbone = build_backbone("resnet50", None).eval()
    bank = ExitBank(backbone.positions, [ExitType("mlp1")], backbone.num_classes).eval()
    names = list(backbone.position_names)
    P = len(names)
    # (positions by stage end, fraction of the samples reaching each that leave)
    stage_end = [i for i, n in enumerate(names) if i + 1 == P or names[i + 1].split(".")[0] != n.split(".")[0]]
    plans = {
        "A: 1 exit, 50% leave": [(stage_end[1], 0.5)],
        "B: 3 exits, 30% each": [(stage_end[0], 0.3), (stage_end[1], 0.3), (stage_end[2] - 3, 0.3)],
        "C: 2 exits, 60% + 50%": [(stage_end[0], 0.6), (stage_end[1], 0.5)],
        "D: 1 late exit, 70%": [(stage_end[2], 0.7)],
    }
    calib = torch.randn(64, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.inference_mode():
        feats, _ = backbone.forward_features(calib)
        conf = {p: top1(bank[p, 0](feats[p]))[1].numpy().astype(np.float64) for p in range(P)}
    configs = []
    for plan in plans.values():
        k, t = np.full(P, -1), np.full(P, np.nan)
        alive = np.ones(64, bool)
        for p, fraction in plan:
            t[p] = np.quantile(conf[p][alive], 1 - fraction)
            k[p] = 0
            alive &= conf[p] < t[p]
        configs.append(Config(k, t))
    test = torch.randn(n_test, 3, size, size, generator=torch.Generator().manual_seed(seed + 2))
    return backbone, bank, configs, list(plans), test


# ---------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=64, help="ResNet-50 input size (default 64 to keep CPU runs short)")
    parser.add_argument("--resnet-samples", type=int, default=128, help="ResNet-50 test inputs (batch 64 uses all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", type=int, default=4, help="digits configurations along the front")
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: stable timings on a shared machine; 0 = torch default)")
    args = parser.parse_args(argv)
    threads = args.threads or torch.get_num_threads()
    device = torch.device(args.device)
    rows = []
    switch_us = None
    if not args.skip_digits:
        if not (DIGITS_RUN / "run.json").exists():
            print(f"skipping digits: no run in {DIGITS_RUN}")
        else:
            backbone, bank, configs, labels, images = digits_setup(args.configs)
            benchmark("digits", backbone, bank, configs, labels, images, device,
                      batches=(1, 64), samples1=len(images), repeats=args.repeats, threads=threads, rows=rows)
            switch_us = switching_time(DyCEModel(backbone, bank, configs))
    if not args.skip_resnet:
        backbone, bank, configs, labels, inputs = resnet_setup(args.size, args.resnet_samples)
        benchmark(f"resnet50@{args.size}", backbone, bank, configs, labels, inputs, device,
                  batches=(1, 64), samples1=min(48, len(inputs)), repeats=args.repeats, threads=threads, rows=rows)
        if switch_us is None:
            switch_us = switching_time(DyCEModel(backbone, bank, configs))

    import pandas as pd

    table = pd.DataFrame(rows, columns=["model", "device", "batch", "config", "C (MACs)", "C (ms)", "time ratio",
                                        "ms/sample", "efficiency"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if switch_us is not None:
        print(f"\nswitching configurations (DyCEModel.use): {switch_us:.2f} us per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
