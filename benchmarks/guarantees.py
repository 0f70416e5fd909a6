"""Do certified configurations hold on unseen data, and what does the guarantee cost? The table README.md quotes.

    python benchmarks/guarantees.py [--resplits 200] [--delta 0.1] [--quick] [--csv FILE]

Two populations, each cut at random many times into search / validation /
test parts (``--resplits`` draws, seeds 0, 1, ...):

* **digits**: the shipped calibration and test caches pooled (797 real
  samples), parts of 40 / 30 / 30 %.
* **synthetic ResNet-50** (``dyce_search.synthetic``, 60,000 samples, 1,000
  classes): 5,000 search, 5,000 validation and the other 50,000 as the test
  part, so that the test drop is close to the population's.

On each draw: the dense front (``dyce_search.front``, 21 lambdas) and Table
II's ``cheapest`` on the search part; then for each max_drop in
{0.5, 1, 2, 5} %, one configuration per way of choosing it, measured on the
test part:

``in-sample``
    ``cheapest`` at max_drop: what Table II reports from the search split.
``conservative``
    The authors' conservative objective (``run(..., conservative=delta)``,
    single-pass, bounded minimiser): the cheapest configuration of its sweep
    whose conservative drop on the search split is <= max_drop.
``certified``
    ``dyce_search.select`` of the front on the validation part (risk
    ``accuracy``, delta), fixed-sequence testing (spread 1).
``certified (spread 3)``
    The same with delta spread over the first three candidates.
``hindsight``
    The cheapest front configuration (or the original model) whose drop *on
    the test part* is <= max_drop: a lower bound no method can know in advance.

Columns: ``violated`` is the share of draws whose test drop exceeds max_drop
(with an exact 95 % interval over the draws: for ``certified`` it must be
<= delta up to that noise; on digits the small test part adds its own noise,
so a configuration whose true drop is within max_drop can still exceed it
there), ``MACs`` the mean relative MACs on the test part, ``fallback`` the
share of draws where select certified nothing (the original model, 100 %).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from analysis.tables import to_markdown  # noqa: E402
from dyce_search import ExitCache, cheapest, front, run, select  # noqa: E402
from dyce_search.stats import binomial_interval  # noqa: E402
from dyce_search.synthetic import make_cache  # noqa: E402

LEVELS = (0.005, 0.01, 0.02, 0.05)
LAMBDAS = np.round(np.linspace(0.0, 1.0, 21), 12)
DIGITS = os.path.join(os.path.dirname(__file__), "..", "data", "digits")
#: How a configuration for a drop level is chosen; the order of the table's column groups.
CHOOSERS = ("in-sample", "conservative", "certified", "certified (spread 3)", "hindsight")
_TOLERANCE = 1e-12


def pooled_digits() -> ExitCache:
    """The shipped calibration and test caches as one population (same run: checked)."""
    a = ExitCache.read(os.path.join(DIGITS, "cache-calibration.parquet"))
    b = ExitCache.read(os.path.join(DIGITS, "cache-test.parquet"))
    a.check_compatible(b)
    if a.metadata.get("run_created") != b.metadata.get("run_created"):
        raise SystemExit("error: the digits caches come from different extraction runs")
    cat = lambda x, y, axis=0: np.concatenate([x, y], axis=axis)  # noqa: E731
    return replace(a, label=cat(a.label, b.label), pred=cat(a.pred, b.pred, 2), conf=cat(a.conf, b.conf, 2),
                   final_pred=cat(a.final_pred, b.final_pred), final_conf=cat(a.final_conf, b.final_conf),
                   sample=cat(a.sample, b.sample), metadata=dict(a.metadata, split="calibration+test"))


def populations(quick: bool):
    synthetic_samples = 12_000 if quick else 60_000
    search = 1_000 if quick else 5_000
    return {
        "digits": (pooled_digits(), (0.4, 0.3, 0.3)),
        "synthetic ResNet-50": (
            make_cache("resnet50", n_samples=synthetic_samples, n_classes=1000, seed=0),
            (search / synthetic_samples, search / synthetic_samples, 1 - 2 * search / synthetic_samples),
        ),
    }


def drops_and_costs(result, cache):
    """(drop, rel_cost) of every configuration of ``result`` on ``cache``."""
    t = result.evaluate(cache)
    return 1.0 - t["rel_accuracy"].to_numpy(float), t["rel_cost"].to_numpy(float)


def one_draw(cache, fractions, seed, delta):
    """Test drop and cost of every chooser at every level on one random resplit; list of row dicts."""
    search, validation, test = cache.split(list(fractions), seed=seed)
    candidates = front(search, lambdas=LAMBDAS, progress=False)
    in_sample = cheapest(search, list(LEVELS), lambdas=[0.0, 0.5, 1.0], starts=candidates, progress=False)
    conservative = run(search, LAMBDAS, method="single_pass", threshold="bounded", conservative=delta,
                       progress=False)
    certified = select(candidates, validation, list(LEVELS), delta=delta)
    chosen = {
        "in-sample": drops_and_costs(in_sample, test),
        "certified": drops_and_costs(certified, test),
        "certified (spread 3)": drops_and_costs(
            select(candidates, validation, list(LEVELS), delta=delta, spread=3), test),
    }
    # conservative: the cheapest configuration of its sweep meeting each level by its own (conservative) measure
    c_table = conservative.table
    c_drop_search = 1.0 - c_table["conservative_rel_accuracy"].to_numpy(float)
    c_cost_search = c_table["rel_cost"].to_numpy(float)
    c_drop, c_cost = drops_and_costs(conservative, test)
    drop, cost = [], []
    for level in LEVELS:
        ok = np.flatnonzero(c_drop_search <= level + _TOLERANCE)
        if ok.size:
            j = ok[np.argmin(c_cost_search[ok])]
            drop.append(c_drop[j])
            cost.append(c_cost[j])
        else:  # nothing qualifies: the original model
            drop.append(0.0)
            cost.append(1.0)
    chosen["conservative"] = (np.array(drop), np.array(cost))
    f_drop, f_cost = drops_and_costs(candidates, test)
    f_drop, f_cost = np.append(f_drop, 0.0), np.append(f_cost, 1.0)
    chosen["hindsight"] = (np.zeros(len(LEVELS)),
                           np.array([f_cost[f_drop <= level + _TOLERANCE].min() for level in LEVELS]))
    certified_fallback = certified.table["fallback"].to_numpy(bool)
    rows = []
    for i, level in enumerate(LEVELS):
        for name in CHOOSERS:
            d, c = chosen[name]
            rows.append({"level": level, "chooser": name, "drop": float(d[i]), "rel_cost": float(c[i]),
                         "fallback": bool(certified_fallback[i]) if name == "certified" else np.nan})
    return rows


def summarise(draws: pd.DataFrame, delta: float) -> pd.DataFrame:
    out = []
    for (population, level), g in draws.groupby(["population", "level"], sort=False):
        row = {"population": population, "max drop": f"{100 * level:g}%"}
        for name in CHOOSERS:
            h = g[g["chooser"] == name]
            n = len(h)
            if name != "hindsight":
                k = int((h["drop"] > level + _TOLERANCE).sum())
                low, high = binomial_interval(k, n)
                row[f"{name} violated"] = f"{k / n:.1%} [{low:.1%}–{high:.1%}]"
            row[f"{name} MACs"] = f"{h['rel_cost'].mean():.1%}"
        cert = g[g["chooser"] == "certified"]
        row["certified fallback"] = f"{cert['fallback'].astype(float).mean():.0%}"
        out.append(row)
    return pd.DataFrame(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resplits", type=int, default=200, help="random resplits per population (default 200)")
    p.add_argument("--delta", type=float, default=0.1, help="delta of select and alpha of the conservative objective")
    p.add_argument("--quick", action="store_true", help="20 resplits, a 12,000-sample synthetic population")
    p.add_argument("--csv", default=None, help="also write every draw to this CSV file")
    args = p.parse_args(argv)
    resplits = 20 if args.quick else args.resplits
    if resplits < 1 or not 0 < args.delta < 1:
        p.error("--resplits must be >= 1 and --delta in (0, 1)")
    from tqdm.auto import tqdm

    rows = []
    start = time.perf_counter()
    for population, (cache, fractions) in populations(args.quick).items():
        one_draw(cache, fractions, seed=10**6, delta=args.delta)  # numba compilation, not counted
        for seed in tqdm(range(resplits), desc=population, disable=None, leave=False):
            for r in one_draw(cache, fractions, seed, args.delta):
                rows.append({"population": population, "seed": seed, **r})
    draws = pd.DataFrame(rows)
    if args.csv:
        from dyce_search._io import write_bytes_atomic

        write_bytes_atomic(args.csv, draws.to_csv(index=False).encode())
    table = summarise(draws, args.delta)
    print(f"{resplits} resplits per population, delta = {args.delta:g}, {time.perf_counter() - start:.0f} s\n")
    groups = [("violated", [c for c in table.columns if c.endswith("violated")]),
              ("MACs", [c for c in table.columns if c.endswith("MACs")] + ["certified fallback"])]
    for title, columns in groups:
        print(f"### {title}\n")
        print(to_markdown(table[["population", "max drop", *columns]].set_index("population")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
