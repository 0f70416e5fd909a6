"""What the synthetic ResNet caches look like: a shape and speed benchmark, not a reproduction.

    python benchmarks/synthetic.py [--samples 20000] [--lambdas 101] [--seed 0]
                                   [--backbones resnet18 resnet34 ...]

For each backbone it builds ``dyce_search.synthetic.make_cache`` and prints:

* ``head acc %``: the head's accuracy (the torchvision V1 top-1 by design);
* ``AUROC first / mid / last / head``: how well the confidence separates
  right from wrong predictions of the largest exit type at the first, middle
  and last early position and at the head (real digits: ~0.70 at the first
  stage, 0.96-0.98 at the head; ImageNet ResNets' heads: 0.85-0.87);
* ``acc first / last``: the largest exit type's standalone accuracy there;
* ``max A``: the largest relative accuracy (Eq. 10) of the descent's lambda
  sweep (above 1: an ensemble beats the head);
* Table II of ``cheapest`` (relative MACs at an accuracy drop of at most
  5 / 2 / 0.5 %), in-sample;
* ``build s`` / ``search s``: seconds to build the cache and for the sweep.

The synthetic caches have the real positions, exit types and MACs but
simulated predictions: nothing in them is fitted to the paper's results, so
their Table II says how the package behaves on such a structure, not what
DyCE achieves on ImageNet.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from analysis.tables import PAPER_LEVELS, level_label, to_markdown  # noqa: E402
from dyce_search import cheapest, run  # noqa: E402
from dyce_search.synthetic import SUPPORTED_BACKBONES, make_cache  # noqa: E402


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def describe(backbone: str, n_samples: int, lambdas: np.ndarray, seed: int) -> dict:
    t0 = time.perf_counter()
    cache = make_cache(backbone, n_samples=n_samples, seed=seed)
    build = time.perf_counter() - t0
    k = cache.n_types - 1
    P = cache.n_positions
    row = {"backbone": backbone, "head acc %": round(100 * cache.head_accuracy, 2)}
    for name, p in (("first", 0), ("mid", P // 2), ("last", P - 1)):
        row[f"AUROC {name}"] = round(auroc(cache.conf[p, k], cache.pred[p, k] == cache.label), 3)
    row["AUROC head"] = round(auroc(cache.final_conf, cache.final_pred == cache.label), 3)
    acc = cache.standalone_accuracy()
    row["acc first %"] = round(100 * acc[0, k], 1)
    row["acc last %"] = round(100 * acc[-1, k], 1)
    t0 = time.perf_counter()
    sweep = run(cache, lambdas, progress=False)
    search = time.perf_counter() - t0
    row["max A"] = round(float(sweep.table["rel_accuracy"].max()), 4)
    table2 = cheapest(cache, list(PAPER_LEVELS), lambdas=lambdas, starts=sweep, progress=False).table
    for level, cost in zip(PAPER_LEVELS, table2["rel_cost"]):
        row[f"MACs % at drop <= {level_label(level)}"] = round(100 * cost, 1)
    row["build s"] = round(build, 2)
    row["search s"] = round(search, 1)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000, help="samples per cache (20,000)")
    parser.add_argument("--lambdas", type=int, default=101, help="size of the lambda grid in [0, 1] (101)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbones", nargs="+", default=list(SUPPORTED_BACKBONES), choices=SUPPORTED_BACKBONES)
    args = parser.parse_args(argv)
    if args.samples < 1 or args.lambdas < 2:
        print("error: --samples must be >= 1 and --lambdas >= 2", file=sys.stderr)
        return 2
    lambdas = np.round(np.linspace(0.0, 1.0, args.lambdas), 12)
    run(make_cache("resnet18", n_samples=200, seed=args.seed), lambdas[:3], progress=False)  # numba warm-up
    frame = pd.DataFrame([describe(b, args.samples, lambdas, args.seed) for b in args.backbones])
    print(f"Synthetic caches (shape and speed benchmark, not ImageNet): {args.samples:,} samples, seed {args.seed}, "
          f"descent over {args.lambdas} lambdas, Table II by cheapest (in-sample)\n")
    print(to_markdown(frame, index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
