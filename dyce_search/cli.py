"""``python -m dyce_search CACHE ...``: search exit configurations over a lambda grid.

Runs :func:`dyce_search.search.run` on a cache, prints one summary row per
lambda (and the test-split metrics with ``--test``) and optionally saves the
:class:`~dyce_search.result.SearchResult`. Bad input prints one line
``error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from .errors import USER_ERRORS, print_cli_error

METHODS = ("single_pass", "iterative", "baseline")
THRESHOLDS = ("exact", "bounded")
OBJECTIVES = ("paper", "normalized")


def parse_lambdas(text: str) -> np.ndarray:
    """Lambdas from ``START:STOP:STEP`` (inclusive of STOP) or a comma list ``0.1,0.5``.

    Grid values are ``START + i * STEP`` rounded to 12 decimals, so
    ``0:1:0.01`` gives exactly 0.0, 0.01, ..., 1.0 (101 values).

    Raises
    ------
    ValueError
        For malformed text, a non-positive step, STOP < START, or a value that
        is NaN or outside [0, 1].
    """
    text = text.strip()
    if not text:
        raise ValueError("--lambdas is empty")
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, step = (float(p) for p in parts)
        else:
            values = [float(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"--lambdas: cannot parse {text!r}; use START:STOP:STEP (e.g. 0:1:0.01) or a list like 0.1,0.5") from None
    if ":" in text:
        if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(step)):
            raise ValueError(f"--lambdas: {text!r} has a non-finite number")
        if step <= 0:
            raise ValueError(f"--lambdas: step must be > 0, got {step:g}")
        if stop < start:
            raise ValueError(f"--lambdas: stop {stop:g} is below start {start:g}")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        if count > 1_000_000:
            raise ValueError(f"--lambdas: {count} values is too many")
        values = [round(start + i * step, 12) for i in range(count)]
    out = np.array(values, dtype=np.float64)
    bad = ~((out >= 0) & (out <= 1))
    if bad.any():
        raise ValueError(f"--lambdas: every lambda must be in [0, 1], got {out[bad][0]:g}")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dyce_search",
        description=(
            "Search DyCE exit configurations G = {k, t} on an exit cache for a grid of lambda "
            "(Eq. 12: f = lambda (1 - A) + (1 - lambda) C) and print one summary row per lambda."
        ),
        epilog="Errors print one line 'error: ...' on stderr and exit with status 2.",
    )
    parser.add_argument("cache", metavar="CACHE", help="exit cache (Parquet) written by 'python -m extract' or make_cache")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="single_pass",
        help="search algorithm: single_pass (Algorithm 3), iterative (Algorithm 2) or baseline "
        "(one exit type at every position with one shared threshold, paper Fig. 5); default: %(default)s",
    )
    parser.add_argument(
        "--lambdas",
        default="0:1:0.01",
        help="lambda values: START:STOP:STEP (STOP included) or a comma list like 0.1,0.5; "
        "each in [0, 1]; default: %(default)s",
    )
    parser.add_argument(
        "--threshold",
        choices=THRESHOLDS,
        default="exact",
        help="threshold minimisation of Eq. 13: exact (every distinct confidence) or bounded "
        "(scipy bounded scalar minimiser, as in the paper); default: %(default)s",
    )
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="paper",
        help="scale of f: paper (Eq. 10-12) or normalized (min-max rescaled accuracy and cost of "
        "the authors' released code); default: %(default)s",
    )
    parser.add_argument(
        "--costs",
        metavar="PROFILE.json",
        help="per-segment / per-exit cost profile (format dyce-costs, e.g. measured latency) "
        "used instead of the cache's MACs",
    )
    parser.add_argument("--test", metavar="CACHE", help="also evaluate every configuration on this cache (e.g. the test split)")
    parser.add_argument(
        "--out", metavar="FILE", help="save the search result: .json (readable without this package) or .parquet"
    )
    parser.add_argument(
        "--max-rounds",
        type=int,
        metavar="N",
        help="iterative search: stop after N rounds (default: until no move improves f)",
    )
    parser.add_argument(
        "--baseline-type",
        metavar="NAME|INDEX|best",
        default="best",
        help="baseline method only: the exit type (name or index) used at every position, or 'best' for the "
        "type whose best shared threshold gives the lowest f at each lambda; default: %(default)s",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    return parser


def summary_table(result, test_table=None):
    """The printed summary: lambda, rel_macs, rel_accuracy, accuracy, #exits, seconds (+ test columns)."""
    import pandas as pd

    table = result.table
    out = pd.DataFrame(
        {
            "lambda": table["lambda"],
            "rel_macs": table["rel_macs"],
            "rel_accuracy": table["rel_accuracy"],
            "accuracy": table["accuracy"],
            "#exits": table["n_exits"],
            "seconds": table["seconds"],
        }
    )
    if test_table is not None:
        out["test_rel_macs"] = test_table["rel_macs"].to_numpy()
        out["test_rel_accuracy"] = test_table["rel_accuracy"].to_numpy()
        out["test_accuracy"] = test_table["accuracy"].to_numpy()
    return out


def main(argv=None) -> int:
    """Entry point of ``python -m dyce_search``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except USER_ERRORS as e:
        return print_cli_error(e)


def _run(args) -> int:
    from .cache import ExitCache
    from .costs import Costs

    lambdas = parse_lambdas(args.lambdas)
    if args.max_rounds is not None and args.max_rounds < 1:
        raise ValueError(f"--max-rounds must be >= 1, got {args.max_rounds}")
    if args.out is not None and not args.out.lower().endswith((".json", ".parquet")):
        raise ValueError(f"--out {args.out}: use a .json or .parquet file name")
    cache = ExitCache.read(args.cache)
    costs = Costs.load(args.costs).check(cache) if args.costs else None
    test_cache = ExitCache.read(args.test) if args.test else None

    from .search import run

    result = run(
        cache,
        lambdas,
        method=args.method,
        threshold=args.threshold,
        objective=args.objective,
        costs=costs,
        max_rounds=args.max_rounds,
        baseline_type=int(args.baseline_type) if args.baseline_type.isdigit() else args.baseline_type,
        progress=False if args.quiet else None,  # None: a bar when stderr is a terminal
    )
    test_table = result.evaluate(test_cache, costs) if test_cache is not None else None
    if args.out:
        result.save(args.out)
    if not args.quiet:
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.width", 200, "display.float_format", "{:.4f}".format):
            print(summary_table(result, test_table).to_string(index=False))
        if args.out:
            print(f"saved {len(result)} configurations to {args.out}")
    return 0
