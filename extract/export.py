"""``python -m extract.export RUN RESULT --out BUNDLE``: a deployable bundle of a run and its search result.

Writes one ``.safetensors`` file (``extract.bundle``): the backbone, the exits
the result's configurations use and the result, no pickle. Prints the
bundle's path on stdout and its size against the run's exit bank on stderr
(``--json``: the sizes as JSON on stdout). Bad input ends with one line
``error: ...`` and status 2.
"""

from __future__ import annotations

import json
import sys

from dyce_search._io import check_writable
from dyce_search.errors import CliParser, DyceError, run_cli


def build_parser() -> CliParser:
    p = CliParser(
        prog="python -m extract.export",
        description="Export a run directory and a search result as one deployable bundle "
        "(backbone + used exits + result, safetensors, no pickle); load it with DyCEModel.load_bundle.",
    )
    p.add_argument("run", help="run directory written by python -m extract")
    p.add_argument("result", help="search result (.json or .parquet) of that run's cache")
    p.add_argument("--out", required=True, help="bundle file to write (e.g. model.dyce.safetensors)")
    p.add_argument("--allow-mixed", action="store_true",
                   help="accept a result searched on a cache of another run (logged warning)")
    p.add_argument("--json", action="store_true", help="print the sizes as JSON on stdout instead of the path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(_export, args, errors=(DyceError, OSError))


def _export(args) -> int:
    check_writable(args.out, option="--out")
    from .bundle import export_bundle  # torch only once the arguments are known to be usable

    summary = export_bundle(args.run, args.result, args.out, allow_mixed=args.allow_mixed)
    deployed, full = summary["deployed"], summary["run_exits"]
    print(
        f"bundle: {deployed['exits']['count']} of {full['count']} exits; "
        f"{deployed['parameters']:,} parameters (backbone {deployed['backbone']['parameters']:,} + exits "
        f"{deployed['exits']['parameters']:,}; the run's exits alone: {full['parameters']:,}); "
        f"{summary['file_bytes']:,} bytes -> {summary['path']}",
        file=sys.stderr,
    )
    print(json.dumps(summary) if args.json else summary["path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
