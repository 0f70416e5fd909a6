"""Recording overhead: one pass with every exit attached vs plain backbone inference.

Recording runs the backbone once per batch (keeping the P early feature maps),
every exit of the bank, and the float32 softmax top-1 of each exit and the
head (``extract.record.record_batch``). The plain pass is ``backbone(x)``
under ``torch.no_grad()``. Both see the same pre-made batches (no data
loading), best of ``--repeats`` interleaved timed passes after a warm-up batch.
Target: recording / plain <= 1.25.

    python benchmarks/extract.py [--batches 3] [--batch-size 8] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from extract.exits import PAPER_EXIT_TYPES, parse_exit_types  # noqa: E402
from extract.pipeline import seeded_bank  # noqa: E402
from extract.record import record_batch  # noqa: E402
from extract.train import autocast_for  # noqa: E402


def best_times(fns, batches, repeats: int) -> list[float]:
    """Best wall time of each function over all batches; repeats interleave the functions
    so that load changes on a shared machine hit both alike."""
    for fn in fns:
        fn(batches[0])  # warm-up: allocator, oneDNN primitive caches
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for x in batches:
                fn(x)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def measure(name, backbone, bank, batches, repeats):
    autocast, _ = autocast_for(torch.device("cpu"))
    available = bank.available

    def plain(x):
        with torch.no_grad():
            backbone(x)

    def record(x):
        record_batch(backbone, bank, x, available, autocast)

    t_plain, t_record = best_times([plain, record], batches, repeats)
    n = sum(len(x) for x in batches)
    return {
        "model": name,
        "exits": f"{available.sum()} ({','.join(bank.exit_types)})" if len(bank.exit_types) <= 3 else f"{available.sum()} (paper's 5 types)",
        "images": n,
        "plain_s": t_plain,
        "record_s": t_record,
        "plain_img_s": n / t_plain,
        "ratio": t_record / t_plain,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []

    from extract.backbones import build_backbone

    resnet = build_backbone("resnet50", None)
    bank = seeded_bank(resnet, PAPER_EXIT_TYPES, 0).eval()
    batches = [torch.randn(args.batch_size, 3, 224, 224) for _ in range(args.batches)]
    rows.append(measure("resnet50 (random) 224", resnet, bank, batches, args.repeats))

    from extract import digits

    splits = digits.load_splits()
    model = digits.DigitsResNet()
    shipped = Path(__file__).resolve().parents[1] / "data" / "digits" / "backbone.pt"
    backbone = digits.build(str(shipped)) if shipped.is_file() else digits.segment(model).eval()
    dbank = seeded_bank(backbone, parse_exit_types(",".join(digits.EXIT_TYPES)), 0).eval()
    images = splits["calibration"].images
    dbatches = [images[i : i + 64] for i in range(0, len(images), 64)]
    rows.append(measure("digits 16x16", backbone, dbank, dbatches, args.repeats))

    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    header = f"{'model':<24} {'exits':<28} {'images':>6} {'plain s':>9} {'record s':>9} {'plain img/s':>11} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<24} {r['exits']:<28} {r['images']:>6} {r['plain_s']:>9.3f} {r['record_s']:>9.3f} "
            f"{r['plain_img_s']:>11.1f} {r['ratio']:>6.3f}"
        )
    print("target: ratio <= 1.25 (recording with every exit attached vs plain inference)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
