"""``python -m analysis``: the paper's figures and Table II for one or more exit caches.

Examples
--------
::

    python -m analysis data/digits/cache-calibration.parquet \\
        --test data/digits/cache-test.parquet --synthetic resnet152 --out reports/demo

    # search and report one model in measured latency (python -m extract.latency)
    python -m analysis cache-calibration.parquet --costs latency.json --out reports/latency

Files pair by order: the i-th ``--test``, ``--validation`` and ``--costs``
belong to the i-th CACHE; repeat the flag for several.

Bad input (unreadable cache, a test cache of another model, a cost profile
that does not fit its cache, bad options, an output folder that cannot be
written) prints one line ``error: ...`` on stderr and exits with status 2;
Ctrl-C prints ``interrupted`` and exits with status 130.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dyce_search._io import check_writable
from dyce_search._logging import add_verbosity, setup_logging
from dyce_search.errors import CliParser, run_cli
from dyce_search.grid import DEFAULT_LAMBDAS, parse_lambdas


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m analysis",
        description="Search DyCE configurations on exit caches and write the paper's figures (PNG, PDF), "
        "Table II (CSV, Markdown) and an index README.md into --out.",
    )
    p.add_argument("caches", nargs="*", metavar="CACHE", help="exit cache files (Parquet) to search on")
    # repeatable flags, not nargs='+': "--test A CACHE" must leave CACHE to the positional list
    p.add_argument("--test", action="append", default=[], metavar="CACHE",
                   help="test-split cache, paired with the CACHE arguments in order (repeat the flag for several): "
                   "held-out fronts with 95%% intervals, Table II on the test split and certified rows")
    p.add_argument("--validation", action="append", default=[], metavar="CACHE",
                   help="validation-split cache, paired with the --test caches in order (repeatable), on which "
                   "select certifies the Table II levels (default: half of each test cache, the other half reports)")
    p.add_argument("--costs", action="append", default=[], metavar="PROFILE",
                   help="cost profile (format dyce-costs, e.g. a latency profile in ms from python -m extract.latency), "
                   "paired with the CACHE arguments in order (repeatable): every search and held-out measurement of "
                   "that model uses it, and its figures and tables are labelled in its unit (default: the cache's MACs)")
    p.add_argument("--delta", type=float, default=0.1, metavar="D",
                   help="allowed violation probability of certified rows (default 0.1)")
    p.add_argument("--risk", choices=("accuracy", "agreement"), default=None,
                   help="risk select bounds (default: accuracy when the validation split is labelled)")
    p.add_argument("--split-seed", type=int, default=0, metavar="S",
                   help="seed of the validation/test halves cut from a test cache (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--lambdas", default=DEFAULT_LAMBDAS,
                   help="lambda values of Eq. 12: start:stop:step (stop included) or a comma list "
                   "(default %(default)s)")
    p.add_argument("--iterative", action=argparse.BooleanOptionalAction, default=True,
                   help="run the (slow) iterative search for Fig. 5 (default: yes)")
    p.add_argument("--compare-on", type=int, default=0, metavar="I",
                   help="index of the cache Fig. 5 compares the search methods on (default 0, the first)")
    p.add_argument("--synthetic", action="append", default=[], metavar="BACKBONE",
                   help="add a synthetic cache of this torchvision ResNet (e.g. resnet152); repeatable")
    p.add_argument("--synthetic-samples", type=int, default=50_000, metavar="N",
                   help="samples per synthetic cache (default 50000, the ImageNet validation set size)")
    p.add_argument("--synthetic-test-samples", type=int, default=0, metavar="N",
                   help="also draw N other samples of each synthetic model as its test split (halved into "
                   "validation and test like any test cache; default 0: none)")
    p.add_argument("--fig3-position", default="0", metavar="P",
                   help="early position of Fig. 3: index or name (default 0, the first)")
    p.add_argument("--fig3-exit-type", default=None, metavar="K",
                   help="exit type of Fig. 3: index or name (default: the largest available)")
    p.add_argument("--disable-first", type=int, default=3, metavar="N",
                   help="Fig. 6 ablation: disable the first N positions (default 3, 0 = no ablation)")
    p.add_argument("--threshold", choices=("exact", "bounded"), default="exact",
                   help="threshold minimisation of the paper's methods in Fig. 5 (default exact); fronts and "
                   "Table II always minimise exactly")
    p.add_argument("--objective", choices=("paper", "normalized"), default="paper",
                   help="objective scale of every search (default paper, Eq. 12)")
    add_verbosity(p, quiet="no progress bar and no summary line")
    return p


#: Repeatable file options and what their i-th file belongs to:
#: (option's attribute, what its files are, the partners' attribute, what those are, why it matters).
_PAIRINGS = (
    ("test", "--test caches", "caches", "CACHE arguments", ""),
    ("costs", "--costs profiles", "caches", "CACHE arguments", ""),
    ("validation", "--validation caches", "test", "--test caches", "; certified rows are reported on the test split"),
)


def _index_or_name(text):
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return run_cli(_run, args)


def _run(args) -> int:
    from dataclasses import replace

    from dyce_search import Costs, ExitCache

    from .figure_files import source_date
    from .report import NamedCache, ReportOptions, build_report, name_caches

    if not args.caches and not args.synthetic:
        raise ValueError("give at least one CACHE or --synthetic BACKBONE")
    for files, what, partners, partners_are, why in _PAIRINGS:
        n, m = len(getattr(args, files)), len(getattr(args, partners))
        if n > m:
            raise ValueError(f"{n} {what} for {m} {partners_are} (they pair in order{why})")
    if args.synthetic_samples < 1:
        raise ValueError(f"--synthetic-samples must be >= 1, got {args.synthetic_samples}")
    if args.synthetic_test_samples < 0 or args.synthetic_test_samples == 1:
        raise ValueError(f"--synthetic-test-samples must be 0 or >= 2, got {args.synthetic_test_samples}")
    lambdas = parse_lambdas(args.lambdas)
    source_date()  # a malformed SOURCE_DATE_EPOCH is reported now, not when the first figure is saved
    check_writable(args.out, option="--out", folder=True)
    caches = [ExitCache.read(path) for path in args.caches]
    tests = [ExitCache.read(path) for path in args.test]
    validations = [ExitCache.read(path) for path in args.validation]
    # checked against their caches with the test and validation caches in build_report, before any search
    profiles = [Costs.load(path) for path in args.costs]
    sources = list(args.caches)
    if args.synthetic:
        from dyce_search.synthetic import make_cache

        n_test = args.synthetic_test_samples
        if n_test:
            tests += [None] * (len(caches) - len(tests))  # file caches without --test keep none
        test_sources = list(args.test) + [""] * (len(tests) - len(args.test))
        for backbone in args.synthetic:
            caches.append(make_cache(backbone=backbone, n_samples=args.synthetic_samples))
            sources.append(f"synthetic {backbone}, {args.synthetic_samples:,} samples")
            if n_test:
                # another seed: other samples of the same model
                tests.append(make_cache(backbone=backbone, n_samples=n_test, seed=1))
                test_sources.append(f"synthetic {backbone}, {n_test:,} other samples (seed 1)")
    else:
        test_sources = list(args.test)
    options = ReportOptions(
        lambdas=lambdas,
        iterative=args.iterative,
        compare_on=args.compare_on,
        threshold_position=_index_or_name(args.fig3_position),
        threshold_exit_type=_index_or_name(args.fig3_exit_type),
        disabled=args.disable_first,
        threshold=args.threshold,
        objective=args.objective,
        delta=args.delta,
        risk=args.risk,
        split_seed=args.split_seed,
        progress=not args.quiet,
    )
    tests = [NamedCache("test", cache, source) for cache, source in zip(tests, test_sources)]
    validations = [NamedCache("validation", cache, path) for cache, path in zip(validations, args.validation)]
    named = name_caches(caches, sources)
    named[:len(profiles)] = [replace(n, costs=costs, costs_source=path)
                             for n, costs, path in zip(named, profiles, args.costs)]
    report = build_report(named, args.out, tests, options, validations)
    # a status line on stderr: stdout stays free for data
    logging.getLogger("analysis").info("wrote %d files; index: %s", len(report.files), report.index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
