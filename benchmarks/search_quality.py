"""How good each search method is, and what it costs: the table README.md quotes.

    python benchmarks/search_quality.py [--quick] [--samples 20000] [--seeds 0 1 2]
                                        [--timing-samples 50000] [--no-timing] [--previous DIR]

Quality (lambdas 0, 0.01, ..., 1; paper and normalized objectives) on the
shipped digits calibration cache and on synthetic ResNet-50 / ResNet-152
caches (``--samples`` samples, one per seed): per method, the mean f, the
number of lambdas where it is worse than each other method (f compared
exactly, from integer counts), Table II (smallest relative MACs at an
accuracy drop <= 5 / 2 / 0.5 %) read off its lambda sweep, and seconds.
Then ``cheapest`` at the same drops against the best configuration any sweep
found. Methods: descent, single-pass (exact and the paper's bounded
minimiser), the best same-threshold baseline and the paper's iterative
search (exact).

Exhaustive check: tiny random caches (2-3 positions, 2 types, <= 12
samples), every configuration tried; how often the descent finds the global
optimum, and that nothing beats the exhaustive minimum.

Timing (ResNet-152 shape, ``--timing-samples`` samples, 101 lambdas, numba
compilation excluded, wall time of the whole ``run`` call): single-pass,
iterative and descent measured in the same run, with the ratios the issue
asks for; ``--previous DIR`` also times the single-pass search of another
checkout (e.g. the previous commit) on the same cache in a subprocess.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from analysis.tables import PAPER_LEVELS, required_cost, to_markdown  # noqa: E402
from dyce_search import ExitCache, cheapest, run  # noqa: E402
from dyce_search.problem import Problem  # noqa: E402
from dyce_search.synthetic import make_cache  # noqa: E402

LAMBDAS = np.round(np.linspace(0.0, 1.0, 101), 12)
#: (label, run() keyword arguments); the order of the table's columns.
METHODS = {
    "descent": dict(method="descent"),
    "single_pass": dict(method="single_pass"),
    "single_pass (bounded)": dict(method="single_pass", threshold="bounded"),
    "baseline": dict(method="baseline"),
    "iterative": dict(method="iterative"),
}
DIGITS = os.path.join(os.path.dirname(__file__), "..", "data", "digits", "cache-calibration.parquet")


def warm_up():
    tiny = make_cache("resnet18", n_samples=300, n_classes=10, seed=0)
    for options in METHODS.values():
        run(tiny, [0.5], progress=False, **options)
    cheapest(tiny, [0.05], lambdas=[0.0, 1.0], progress=False)


def exact_f(problem, configs, lambdas):
    """f of every configuration at its lambda from exact integer counts (the searches' own values)."""
    nc, cs = problem.counts(configs)
    return np.array([problem.value(lam, a, b) for lam, a, b in zip(lambdas, nc, cs)])


def quality(caches, objectives):
    rows, table2 = [], []
    for name, cache in caches:
        for objective in objectives:
            problem = Problem(cache, None, objective)
            results, f, seconds = {}, {}, {}
            for label, options in METHODS.items():
                t0 = time.perf_counter()
                results[label] = run(cache, LAMBDAS, objective=objective, progress=False, **options)
                seconds[label] = time.perf_counter() - t0
                f[label] = exact_f(problem, results[label].configs, LAMBDAS)
            for label in METHODS:
                row = {"cache": name, "objective": objective, "method": label, "mean f": f[label].mean()}
                for other in METHODS:
                    row[f"worse than {other}"] = int(np.sum(f[label] > f[other])) if other != label else "-"
                sweep = required_cost(results[label].table, PAPER_LEVELS)
                for level, cost in zip(PAPER_LEVELS, sweep["rel_cost"]):
                    row[f"II {100 * level:g}%"] = cost
                row["seconds"] = seconds[label]
                rows.append(row)
            t0 = time.perf_counter()
            target = cheapest(cache, list(PAPER_LEVELS), objective=objective, progress=False)
            target_seconds = time.perf_counter() - t0
            for j, level in enumerate(PAPER_LEVELS):
                best_sweep = min(required_cost(r.table, [level])["rel_cost"].iloc[0] for r in results.values())
                best_method = min(results, key=lambda m: required_cost(results[m].table, [level])["rel_cost"].iloc[0])
                table2.append({
                    "cache": name, "objective": objective, "drop": f"{100 * level:g}%",
                    "cheapest": target.table["rel_cost"].iloc[j], "best sweep": best_sweep,
                    "best sweep method": best_method,
                    "cheapest <= sweeps": bool(target.table["rel_cost"].iloc[j] <= best_sweep + 1e-12),
                    "cheapest seconds": target_seconds,
                })
    return pd.DataFrame(rows), pd.DataFrame(table2)


def summary(rows):
    """Totals over every cache and objective: the issue's quality targets."""
    d = rows[rows["method"] == "descent"]
    it = rows[rows["method"] == "iterative"]
    n = len(LAMBDAS) * len(d)
    out = {
        "lambdas compared": n,
        "descent worse than single_pass": int(d["worse than single_pass"].sum()),
        "descent worse than single_pass (bounded)": int(d["worse than single_pass (bounded)"].sum()),
        "descent worse than baseline": int(d["worse than baseline"].sum()),
        "descent worse than iterative": int(d["worse than iterative"].sum()),
        "share worse than iterative": d["worse than iterative"].sum() / n,
        "caches where mean f > iterative's": int(np.sum(d["mean f"].to_numpy() > it["mean f"].to_numpy() + 1e-15)),
        "iterative worse than descent": int(it["worse than descent"].sum()),
        "mean f descent": d["mean f"].mean(),
        "mean f iterative": it["mean f"].mean(),
    }
    return pd.Series(out)


def exhaustive_check(n_caches, seed):
    """How often the descent reaches the global optimum of tiny caches (and that nothing beats it)."""
    rng = np.random.default_rng(seed)
    matched = beaten = total = 0
    for i in range(n_caches):
        P, K, M = int(rng.integers(2, 4)), 2, int(rng.integers(4, 13))
        cache = _tiny_cache(rng, P, K, M)
        problem = Problem(cache)
        if problem.n_head_correct == 0:
            continue
        options = []
        for p in range(P):
            opts = [(-1, np.nan)]
            for k in range(K):
                opts += [(k, float(v)) for v in sorted(set(cache.conf[p, k].tolist()))]
            options.append(opts)
        from dyce_search import Config

        every = [Config(np.array([o[0] for o in combo]), np.array([o[1] for o in combo])) for combo in
                 itertools.product(*options)]
        nc, cs = problem.counts(every)
        lambdas = [0.2, 0.5, 0.8, 0.95]
        result = run(cache, lambdas, progress=False)
        got = exact_f(problem, result.configs, lambdas)
        for j, lam in enumerate(lambdas):
            best = min(problem.value(lam, a, b) for a, b in zip(nc, cs))
            total += 1
            matched += got[j] == best
            beaten += got[j] < best
    return pd.Series({"tiny problems (cache x lambda)": total, "descent matches the exhaustive optimum": matched,
                      "share matched": matched / max(total, 1), "exhaustive optimum beaten (must be 0)": beaten})


def _tiny_cache(rng, P, K, M):
    C = 3
    label = rng.integers(0, C, M).astype(np.int32)
    pred = np.where(rng.random((P, K, M)) < 0.6, label, rng.integers(0, C, (P, K, M))).astype(np.int32)
    conf = rng.random((P, K, M), dtype=np.float32)
    final = np.where(rng.random(M) < 0.8, label, rng.integers(0, C, M)).astype(np.int32)
    cumulative = np.cumsum(rng.integers(1, 1000, P + 1))
    return ExitCache(
        label=label, pred=pred, conf=conf, final_pred=final, final_conf=rng.random(M, dtype=np.float32),
        backbone_macs=cumulative[:-1].astype(np.int64), exit_macs=rng.integers(0, 300, (P, K)).astype(np.int64),
        available=np.ones((P, K), bool), total_macs=int(cumulative[-1]),
        positions=tuple(f"pos{p}" for p in range(P)), exit_types=tuple(f"type{k}" for k in range(K)),
        sample=np.arange(M, dtype=np.int64), num_classes=C, metadata={"backbone": "random", "synthetic": True},
    )


_PREVIOUS_SINGLE_PASS = """
import sys, time, numpy as np
sys.path.insert(0, sys.argv[1])
from dyce_search import ExitCache, run
from dyce_search.synthetic import make_cache
cache = ExitCache.read(sys.argv[2])  # the very cache timed here, whatever the other checkout's generator makes
lambdas = np.round(np.linspace(0, 1, 101), 12)
run(make_cache("resnet18", n_samples=300, n_classes=10), [0.5], method="single_pass", progress=False)
t0 = time.perf_counter()
run(cache, lambdas, method="single_pass", progress=False)
print(time.perf_counter() - t0)
"""


def timing(samples, previous):
    cache = make_cache("resnet152", n_samples=samples, seed=0)
    rows = {}
    for label in ("single_pass", "iterative", "descent"):
        t0, c0 = time.perf_counter(), time.process_time()
        run(cache, LAMBDAS, progress=False, **METHODS[label])
        rows[label] = (time.perf_counter() - t0, time.process_time() - c0)
    table = pd.DataFrame({"seconds": {k: v[0] for k, v in rows.items()}, "cpu s": {k: v[1] for k, v in rows.items()}})
    ratios = {
        "iterative / single_pass": rows["iterative"][0] / rows["single_pass"][0],
        "descent / iterative": rows["descent"][0] / rows["iterative"][0],
        "descent / single_pass": rows["descent"][0] / rows["single_pass"][0],
    }
    if previous:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = cache.write(os.path.join(folder, "timing.parquet"))
            done = subprocess.run([sys.executable, "-c", _PREVIOUS_SINGLE_PASS, previous, str(path)],
                                  capture_output=True, text=True, check=True)
        before = float(done.stdout.strip().splitlines()[-1])
        table.loc["single_pass (previous checkout)", "seconds"] = before
        ratios["single_pass / previous single_pass"] = rows["single_pass"][0] / before
    return table, pd.Series(ratios)


def main(argv=None):
    import numba

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 samples, one seed, paper objective, no timing")
    parser.add_argument("--samples", type=int, default=20_000, help="samples per synthetic cache (default 20000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="synthetic cache seeds")
    parser.add_argument("--timing-samples", type=int, default=50_000)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--previous", metavar="DIR", help="a checkout whose single-pass search to time as well")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.seeds, args.no_timing = 3000, args.seeds[:1], True
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    warm_up()
    caches = [("digits (calibration)", ExitCache.read(DIGITS))]
    for backbone in ("resnet50", "resnet152"):
        for seed in args.seeds:
            caches.append((f"{backbone} synthetic {args.samples // 1000}k seed {seed}",
                           make_cache(backbone, n_samples=args.samples, seed=seed)))
    objectives = ("paper",) if args.quick else ("paper", "normalized")
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.max_rows", 500)
    started = time.perf_counter()
    rows, table2 = quality(caches, objectives)
    print(f"## Quality ({len(LAMBDAS)} lambdas per cache and objective, {numba.get_num_threads()} threads)\n")
    print(to_markdown(rows, index=False))
    print("\n## Targets against the issue\n")
    print(to_markdown(summary(rows).to_frame("value")))
    print("\n## Table II: cheapest vs the best lambda sweep of any method\n")
    print(to_markdown(table2, index=False))
    print("\n## Exhaustive search on tiny caches\n")
    print(to_markdown(exhaustive_check(40 if args.quick else 120, seed=1).to_frame("value")))
    if not args.no_timing:
        table, ratios = timing(args.timing_samples, args.previous)
        print(f"\n## Timing: ResNet-152 shape, {args.timing_samples:,} samples, {len(LAMBDAS)} lambdas\n")
        print(to_markdown(table))
        print()
        print(to_markdown(ratios.to_frame("ratio")))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
