"""Exit cache timings: synthetic build, validation, Parquet write and read.

    python benchmarks/cache.py [--backbone resnet152] [--samples 50000] [--repeat 3]

Prints one table row per step with the best of ``--repeat`` wall-clock times.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace

from dyce_search import ExitCache
from dyce_search.synthetic import SUPPORTED_BACKBONES, make_cache


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet152", choices=SUPPORTED_BACKBONES)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    t_build, cache = best_of(args.repeat, lambda: make_cache(args.backbone, n_samples=args.samples))
    # replace() re-runs the constructor's coercion and validation on the same arrays
    t_validate, _ = best_of(args.repeat, lambda: replace(cache))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cache.parquet")
        t_write, _ = best_of(args.repeat, lambda: cache.write(path))
        size = os.path.getsize(path)
        t_read, back = best_of(args.repeat, lambda: ExitCache.read(path))
    assert back.equals(cache)

    P, K, M = cache.pred.shape
    print(f"{args.backbone}: P={P} positions x K={K} exit types x M={M} samples, file {size / 1e6:.1f} MB")
    print(f"{'step':<28}{'seconds':>10}")
    for name, t in (
        ("make_cache (synthetic)", t_build),
        ("ExitCache(...) validation", t_validate),
        ("write (atomic, zstd)", t_write),
        ("read (with validation)", t_read),
    ):
        print(f"{name:<28}{t:>10.3f}")


if __name__ == "__main__":
    main()
