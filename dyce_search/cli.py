"""``python -m dyce_search CACHE ...``: search exit configurations over a lambda grid or for budget targets.

Runs :func:`dyce_search.run` on a cache (or :func:`~dyce_search.cheapest`,
:func:`~dyce_search.most_accurate`, :func:`~dyce_search.front` with
``--max-drop``, ``--max-cost``, ``--front``), prints one summary row per
configuration (and the test-split metrics with ``--test``) on stdout, as an
aligned table, CSV or JSON (``--format``), and optionally
saves the :class:`~dyce_search.result.SearchResult`. Bad input prints one
line ``error: ...`` on stderr and exits with status 2; Ctrl-C prints
``interrupted`` and exits with status 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ._io import check_writable
from ._logging import add_verbosity, setup_logging
from .errors import CliParser, run_cli
from .grid import DEFAULT_LAMBDAS, parse_lambdas, parse_numbers
from .methods import DEFAULT_METHOD, METHODS
from .provenance import OVERRIDE_FLAG, check_caches

THRESHOLDS = ("exact", "bounded")
OBJECTIVES = ("paper", "normalized")


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="python -m dyce_search",
        description=(
            "Search DyCE exit configurations G = {k, t} on an exit cache for a grid of lambda "
            "(Eq. 12: f = lambda (1 - A) + (1 - lambda) C), or for accuracy-drop / cost targets, and print "
            "one summary row per configuration."
        ),
        epilog="Errors print one line 'error: ...' on stderr and exit with status 2; Ctrl-C exits with status 130.",
    )
    parser.add_argument("cache", metavar="CACHE", help="exit cache (Parquet) written by 'python -m extract' or make_cache")
    parser.add_argument(
        "--method",
        choices=tuple(METHODS),
        default=None,
        help="search algorithm (default: %s): " % DEFAULT_METHOD
        + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()),
    )
    parser.add_argument(
        "--lambdas",
        default=None,
        help="lambda values: START:STOP:STEP (STOP included) or a comma list like 0.1,0.5; "
        "each in [0, 1]; with --max-drop / --max-cost / --front the grid of the seeding sweep; "
        f"default: {DEFAULT_LAMBDAS}",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--max-drop",
        metavar="D[,D...]",
        help="instead of one configuration per lambda: the cheapest configuration whose accuracy drop 1 - A "
        "(Eq. 10) is at most each D (e.g. 0.05,0.02,0.005 for Table II), by descent and Lagrangian bisection",
    )
    target.add_argument(
        "--max-cost",
        metavar="C[,C...]",
        help="instead of one configuration per lambda: the most accurate configuration whose relative cost C "
        "(Eq. 11) is at most each value (e.g. 0.5 for half the MACs)",
    )
    target.add_argument(
        "--front",
        action="store_true",
        help="a dense non-dominated accuracy/cost front: the lambda sweep merged with the cheapest "
        "configuration for 50 accuracy drops",
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
        "--select-on",
        metavar="CACHE",
        help="with --max-drop: search the dense front on CACHE, then certify on this validation cache the cheapest "
        "configuration whose drop holds on unseen data with probability >= 1 - delta (dyce_search.select); "
        "it must hold other samples than CACHE",
    )
    parser.add_argument("--delta", type=float, default=0.1,
                        help="with --select-on: allowed probability that a certified drop is exceeded; default: %(default)s")
    parser.add_argument("--risk", choices=("accuracy", "agreement"), default="accuracy",
                        help="with --select-on: what is certified: accuracy (needs labels) or agreement with the "
                        "head (needs none); default: %(default)s")
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
    parser.add_argument(
        OVERRIDE_FLAG, action="store_true",
        help="accept --test, --select-on and --costs files of another run than CACHE (other backbone weights, "
        "exits, preprocessing or MACs; see docs/cache-format.md), with a warning instead of an error",
    )
    parser.add_argument(
        "--format",
        choices=tuple(SUMMARY_FORMATS),
        default="table",
        help="how the summary goes to stdout: " + "; ".join(f"{k}: {v.summary}" for k, v in SUMMARY_FORMATS.items())
        + "; default: %(default)s",
    )
    add_verbosity(parser, quiet="no progress bar and no summary table")
    return parser


def _as_table(frame, stream) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.width", 200, "display.float_format", "{:.4f}".format):
        print(frame.to_string(index=False), file=stream)


def _as_csv(frame, stream) -> None:
    # full precision: a machine reader should get the numbers the result file holds
    frame.to_csv(stream, index=False, float_format="%.17g", lineterminator="\n")


def _as_json(frame, stream) -> None:
    # one array of row objects; missing values are null (plain JSON, jq-friendly)
    stream.write(frame.to_json(orient="records", double_precision=15))
    stream.write("\n")


@dataclass(frozen=True)
class SummaryFormat:
    """One way of writing the summary table to stdout."""

    summary: str
    write: Callable


#: ``--format`` choices: how :func:`summary_table` is written to stdout.
SUMMARY_FORMATS = {
    "table": SummaryFormat("aligned columns, 4 decimals, for reading", _as_table),
    "csv": SummaryFormat("comma-separated with a header row, full precision", _as_csv),
    "json": SummaryFormat("a JSON array of one object per row, null for missing values", _as_json),
}


def summary_table(result, test_table=None):
    """The printed summary: lambda (or target), rel_cost, rel_accuracy, accuracy, n_exits, seconds (+ test columns)."""
    import pandas as pd

    table = result.table
    first = {"target": table["target"]} if "target" in table and table["lambda"].isna().all() else {}
    if "certified" in table:
        return pd.DataFrame({
            "target": table["target"],
            "rel_cost": table["rel_cost"],
            "rel_accuracy": table["rel_accuracy"],
            "val_rel_cost": table["validation_rel_cost"],
            "val_rel_accuracy": table["validation_rel_accuracy"],
            "risk_bound": table["risk_bound"],
            "fallback": table["fallback"],
            **({} if test_table is None else {"test_rel_cost": test_table["rel_cost"].to_numpy(),
                                              "test_rel_accuracy": test_table["rel_accuracy"].to_numpy()}),
        })
    out = pd.DataFrame(
        {
            **first,
            "lambda": table["lambda"],
            "rel_cost": table["rel_cost"],
            "rel_accuracy": table["rel_accuracy"],
            "accuracy": table["accuracy"],
            "n_exits": table["n_exits"],
            "seconds": table["seconds"],
        }
    )
    if test_table is not None:
        out["test_rel_cost"] = test_table["rel_cost"].to_numpy()
        out["test_rel_accuracy"] = test_table["rel_accuracy"].to_numpy()
        out["test_accuracy"] = test_table["accuracy"].to_numpy()
    return out


def main(argv=None) -> int:
    """Entry point of ``python -m dyce_search``; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return run_cli(_run, args)


def _costs_for(path, cache, allow_mixed):
    """The ``--costs`` profile checked against the search cache (adopted by it when mixing is allowed)."""
    from .costs import Costs

    costs = Costs.load(path).check(cache, allow_mixed=allow_mixed)
    return costs.adopted_by(cache) if allow_mixed else costs


def _run(args) -> int:
    from .cache import ExitCache
    from .costs import Costs

    if args.select_on is not None and args.max_drop is None:
        raise ValueError("--select-on needs --max-drop (the drops to certify)")
    if args.select_on is None and (args.delta != 0.1 or args.risk != "accuracy"):
        raise ValueError("--delta and --risk apply to --select-on only")
    targets = args.max_drop is not None or args.max_cost is not None or args.front
    if targets and args.method not in (None, "descent"):
        raise ValueError("--max-drop, --max-cost and --front search with the descent; drop --method "
                         f"{args.method}")
    if targets and args.threshold != "exact":
        raise ValueError("--max-drop, --max-cost and --front minimise thresholds exactly; drop --threshold bounded")
    method = args.method or DEFAULT_METHOD
    lambdas = parse_lambdas(args.lambdas if args.lambdas is not None else DEFAULT_LAMBDAS)
    drops = parse_numbers(args.max_drop, "--max-drop") if args.max_drop is not None else None
    budgets = parse_numbers(args.max_cost, "--max-cost") if args.max_cost is not None else None
    if args.max_rounds is not None and args.max_rounds < 1:
        raise ValueError(f"--max-rounds must be >= 1, got {args.max_rounds}")
    if args.out is not None and not args.out.lower().endswith((".json", ".parquet")):
        raise ValueError(f"--out {args.out}: use a .json or .parquet file name")
    if args.out is not None:
        check_writable(args.out, option="--out")
    mixed = args.allow_mixed_runs
    cache = ExitCache.read(args.cache)
    costs = _costs_for(args.costs, cache, mixed) if args.costs else None
    test_cache = ExitCache.read(args.test) if args.test else None
    validation = ExitCache.read(args.select_on) if args.select_on else None
    # every file is checked against the search cache before any search work
    for option, path, other in (("--test", args.test, test_cache), ("--select-on", args.select_on, validation)):
        if other is not None:
            check_caches(cache, other, args.cache, f"{option} {path}", allow_mixed=mixed)
    if validation is not None and validation.samples_digest == cache.samples_digest:
        raise ValueError(f"--select-on {args.select_on} holds the samples of {args.cache}; certify on another split")

    progress = False if args.quiet else None  # None: a bar when stderr is a terminal
    common = dict(objective=args.objective, costs=costs, progress=progress)
    if validation is not None:
        from .selection import select
        from .targets import front

        candidates = front(cache, lambdas=lambdas, **common)
        result = select(candidates, validation, drops, delta=args.delta, risk=args.risk, allow_mixed=mixed)
    elif drops is not None:
        from .targets import cheapest

        result = cheapest(cache, drops, lambdas=lambdas, **common)
    elif budgets is not None:
        from .targets import most_accurate

        result = most_accurate(cache, budgets, lambdas=lambdas, **common)
    elif args.front:
        from .targets import front

        result = front(cache, lambdas=lambdas, **common)
    else:
        from .search import run

        result = run(
            cache,
            lambdas,
            method=method,
            threshold=args.threshold,
            max_rounds=args.max_rounds,
            baseline_type=int(args.baseline_type) if args.baseline_type.isdigit() else args.baseline_type,
            **common,
        )
    test_table = result.evaluate(test_cache, costs, allow_mixed=mixed) if test_cache is not None else None
    if args.out:
        result.save(args.out)
    if not args.quiet:
        SUMMARY_FORMATS[args.format].write(summary_table(result, test_table), sys.stdout)
    if args.out:
        # a status line: stdout carries only the table, so it can be piped
        logging.getLogger(__name__).info("saved %d configurations to %s", len(result), args.out)
    return 0
