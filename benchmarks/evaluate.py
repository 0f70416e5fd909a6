"""Time one dyce_search.evaluate() call on the 50,000 x 49 x 5 synthetic ResNet-152 cache.

Usage: python benchmarks/evaluate.py [--threads N] [--repeats R]
Prints min / median milliseconds per call for a few configurations, with the
default cost model (MACs from the cache) and with Costs/Objective prebuilt.
"""
import argparse
import time

import numba
import numpy as np

from dyce_search.config import Config
from dyce_search.costs import Costs
from dyce_search.evaluation import evaluate, simulate
from dyce_search.objective import Objective
from dyce_search.synthetic import make_cache


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--searched", action="store_true", help="also time configurations found by search.run")
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    cache = make_cache()
    P, K, M = cache.conf.shape
    rng = np.random.default_rng(0)
    cases = {
        "no early exit": Config.empty(P),
        "every 4th position, random t": Config(np.where(np.arange(P) % 4 == 0, 1, -1), rng.random(P)),
        "every 3rd position, t=0.95": Config(np.where(np.arange(P) % 3 == 0, 4, -1), np.full(P, 0.95)),
        "all 49, t=0.9": Config(np.zeros(P, np.int64), np.full(P, 0.9)),
        "all 49, t=1.01 (worst: no sample leaves)": Config(np.zeros(P, np.int64), np.full(P, 1.01)),
    }
    if args.searched:
        from dyce_search.search import run

        found = run(cache, [0.5, 0.9, 1.0], progress=False)
        for lam, config in zip(found.lambdas, found.configs):
            cases[f"single_pass result, lambda={lam:g} ({int(config.enabled.sum())} exits)"] = config
    costs = Costs.from_cache(cache)
    objective = Objective.paper(cache, costs)
    print(f"cache {P} positions x {K} exit types x {M} samples, numba threads {numba.get_num_threads()}")
    print(f"{'configuration':52s} {'call':24s} {'min ms':>8s} {'median ms':>10s}")
    for name, config in cases.items():
        for label, call in (
            ("evaluate(cache, cfg, lam)", lambda: evaluate(cache, config, lam=0.5)),
            ("evaluate(..., costs, obj)", lambda: evaluate(cache, config, costs, objective=objective, lam=0.5)),
            ("simulate(cache, cfg)", lambda: simulate(cache, config)),
        ):
            call()
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            print(f"{name:52s} {label:24s} {min(times) * 1e3:8.3f} {np.median(times) * 1e3:10.3f}")


if __name__ == "__main__":
    main()
