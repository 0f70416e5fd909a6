"""Configuration search timings and quality on synthetic ResNet-shaped caches.

    python benchmarks/search.py [--quick] [--lambdas 101] [--bounded-lambdas 5]
                                [--iterative-bounded-lambdas 2] [--backbones resnet152 resnet50]
                                [--samples 50000] [--threads 2]

For each backbone (``dyce_search.synthetic.make_cache``, 50,000 samples) and
each method (descent, single-pass, iterative, baseline) it runs the search
over an evenly spaced lambda grid with exact threshold minimisation, and over
a few of those lambdas (``--bounded-lambdas``; the bounded iterative search
only on ``--iterative-bounded-lambdas`` of them) with the paper's bounded
minimisation. Numba compilation is done first on a tiny cache and excluded.
``benchmarks/search_quality.py`` compares the methods' results.

Columns: ``seconds`` wall time of the whole ``run`` call (presort and
evaluation included), ``cpu s`` CPU time of all threads over that call (on a
machine shared with other jobs, compare the two to see how many cores the
search really had), ``s/lambda``, ``f mean`` over the row's lambdas, ``f vs exact`` mean of
(f - f of the exact search at the same lambdas), ``identical 1 vs 2 threads``
(configurations and f bit-identical when rerun with one numba thread; exact
searches only), ``peak MB`` resident memory the search added on top of the
process before it (Linux ``VmHWM``, reset per row) and ``x cache`` that
figure over the cache arrays' size. ``--quick`` uses 11 lambdas, 3 bounded
lambdas and 10,000 samples.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numba
import numpy as np
import pandas as pd

from dyce_search.search import run
from dyce_search.synthetic import make_cache


def _status_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def measured(fn):
    """(result, (wall seconds, CPU seconds of all threads), extra peak MB) of fn()."""
    can_reset = _reset_peak()
    before = _status_kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    seconds = (time.perf_counter() - t0, time.process_time() - c0)
    peak = _status_kb("VmHWM") if can_reset else float("nan")
    return out, seconds, (peak - before) / 1024


def cache_bytes(cache):
    return sum(np.asarray(getattr(cache, a)).nbytes for a in ("label", "pred", "conf", "final_pred", "final_conf",
                                                               "sample"))


def same(a, b):
    return all(
        np.array_equal(x.exit_types, y.exit_types) and np.array_equal(x.thresholds, y.thresholds, equal_nan=True)
        for x, y in zip(a.configs, b.configs)
    ) and np.array_equal(a.table["f"].to_numpy(), b.table["f"].to_numpy())


def bench_minimisation(backbone, n_samples, lam=0.7, stride=4):
    """Exact vs bounded minimisation of Eq. 13 for every exit at every ``stride``-th position.

    The rest of G is the single-pass configuration at ``lam`` (so most positions
    see only the samples earlier exits leave them); positions no sample
    reaches are skipped. One row per method: exact with its own column sort
    (the public ``minimize_threshold``), exact on the presorted column (what
    a search does per candidate) and bounded.
    """
    from dyce_search._kernels.search import presort
    from dyce_search._kernels.thresholds import scan_thresholds
    from dyce_search.problem import Problem
    from dyce_search.thresholds import Candidate

    cache = make_cache(backbone, n_samples=n_samples)
    prob = Problem(cache)
    config = run(cache, [lam], method="single_pass", progress=False).configs[0]
    state = prob.state(config.exit_types, config.thresholds)
    P, K, M = prob.shape
    keys, n_valid = presort(prob.conf, prob.pred, prob.truth, prob.available)

    def presorted(cand, k):
        return scan_thresholds(keys[cand.p, k], n_valid[cand.p, k], cand.code, cand.saved, cand.n_reach,
                               cand.n_correct0, cand.cost_sum0 + cand.n_reach * prob.exit_q[cand.p, k],
                               *cand.coefs)[::-1]

    methods = {
        "exact (sort + scan)": lambda cand, k: cand.exact(k),
        "exact (presorted, as in searches)": presorted,
        "bounded (scipy's iterates, numba)": lambda cand, k: cand.bounded(k),
    }
    found = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for p in range(0, P, stride):
        cand = Candidate(prob, state, config.exit_types, p, lam)
        if cand.n_reach == 0:
            continue  # nothing to minimise: no sample reaches p
        for k in range(K):
            for name, minimise in methods.items():
                t0 = time.perf_counter()
                found[name].append(minimise(cand, k)[1])
                seconds[name] += time.perf_counter() - t0
    exact = np.array(found["exact (sort + scan)"])
    rows = []
    for name, values in found.items():
        gap = np.array(values) - exact
        rows.append({
            "shape": f"{backbone} {M}x{P}x{K}",
            "minimisation": name,
            "calls": len(values),
            "ms/call": round(1e3 * seconds[name] / max(len(values), 1), 3),
            "worse than exact": int((gap > 0).sum()),
            "better than exact": int((gap < 0).sum()),
            "mean f gap": f"{gap.mean():.2e}",
            "max f gap": f"{gap.max():.2e}",
        })
    return rows


def warm_up():
    from dyce_search import METHODS

    tiny = make_cache("resnet18", n_samples=200, n_classes=10)
    for name, method in METHODS.items():
        for threshold in method.thresholds:
            run(tiny, [0.5], method=name, threshold=threshold, max_rounds=2, progress=False)


def bench_backbone(backbone, n_samples, lambdas, bounded_lambdas, iterative_bounded, threads):
    cache = make_cache(backbone, n_samples=n_samples)
    P, K, M = cache.conf.shape
    size = cache_bytes(cache)
    shape = f"{backbone} {M}x{P}x{K}"
    rows = []
    exact_f = {}
    for method in ("descent", "single_pass", "iterative", "baseline"):
        numba.set_num_threads(threads)
        result, seconds, peak = measured(lambda: run(cache, lambdas, method=method, progress=None))
        exact_f[method] = dict(zip(result.table["lambda"], result.table["f"]))
        numba.set_num_threads(1)
        again = run(cache, lambdas, method=method, progress=None)
        numba.set_num_threads(threads)
        rows.append(row(shape, method, "exact", lambdas, seconds, result, threads, same(result, again), peak, size))
        print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    for method in ("single_pass", "iterative", "baseline"):
        # bounded iterative is the slowest by far: fewer lambdas
        lams = bounded_lambdas[len(bounded_lambdas) // 2:][:iterative_bounded] if method == "iterative" \
            else bounded_lambdas
        result, seconds, peak = measured(lambda: run(cache, lams, method=method, threshold="bounded", progress=None))
        gap = np.mean([f - exact_f[method][lam] for lam, f in zip(result.table["lambda"], result.table["f"])])
        rows.append(row(shape, method, "bounded", lams, seconds, result, 1, None, peak, size, gap))
        print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    return rows


def row(shape, method, threshold, lambdas, seconds, result, threads, identical, peak, size, gap=0.0):
    return {
        "shape": shape,
        "method": method,
        "threshold": threshold,
        "lambdas": len(lambdas),
        "seconds": round(seconds[0], 2),
        "cpu s": round(seconds[1], 2),
        "s/lambda": round(seconds[0] / len(lambdas), 4),
        "f mean": round(float(result.table["f"].mean()), 6),
        "f vs exact": f"{gap:+.2e}",
        "threads": threads,
        "identical 1 vs 2 threads": "-" if identical is None else ("yes" if identical else "NO"),
        "peak MB": round(peak, 1),
        "x cache": round(peak * 2**20 / size, 2),
    }


def main(argv=None):
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and argv is None:
        # A fixed mmap threshold makes glibc hand large freed arrays back to the
        # OS, so each row's peak memory is its own, not the previous row's.
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="11 lambdas, 3 bounded, 10,000 samples")
    parser.add_argument("--lambdas", type=int, default=None, help="exact searches: size of the lambda grid (101)")
    parser.add_argument("--bounded-lambdas", type=int, default=None, help="bounded searches: lambdas (5)")
    parser.add_argument("--iterative-bounded-lambdas", type=int, default=2,
                        help="bounded iterative search: lambdas, the middle ones of the bounded set (2)")
    parser.add_argument("--backbones", nargs="+", default=["resnet152", "resnet50"])
    parser.add_argument("--samples", type=int, default=None, help="samples per cache (50,000)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    n_lambdas = args.lambdas or (11 if args.quick else 101)
    n_bounded = args.bounded_lambdas or (3 if args.quick else 5)
    n_samples = args.samples or (10_000 if args.quick else 50_000)
    threads = min(args.threads, numba.config.NUMBA_NUM_THREADS)
    lambdas = np.linspace(0, 1, n_lambdas)
    # bounded lambdas: a subset of the exact grid so that f can be compared
    bounded = lambdas[np.unique(np.linspace(0, n_lambdas - 1, n_bounded + 2).round().astype(int))[1:-1]]

    t0 = time.perf_counter()
    warm_up()
    print(f"numba compilation / cache load: {time.perf_counter() - t0:.1f} s (excluded); "
          f"{threads} threads; bounded lambdas {np.round(bounded, 3).tolist()}", flush=True)
    minimisation = []
    for backbone in args.backbones:
        minimisation += bench_minimisation(backbone, n_samples)
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print("\nThreshold minimisation (Eq. 13), rest of G = single-pass configuration at lambda = 0.7:")
        print(pd.DataFrame(minimisation).to_string(index=False), flush=True)
    rows = []
    for backbone in args.backbones:
        rows += bench_backbone(backbone, n_samples, lambdas, bounded, args.iterative_bounded_lambdas, threads)
    print()
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print("Searches:")
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
