"""The MACs table of every built-in backbone, as docs/backbones.md shows it.

    python -m extract.backbones.table [NAME ...]

Prints Markdown: one summary row per backbone (family, early positions P,
MACs of the whole model), then, per backbone, the cumulative backbone MACs
and the MACs of the paper's five exit types at the first, middle and last
early position. Counts come from :func:`extract.macs.macs_table` on the meta
device (nothing is computed), at each model's own input size, 1000 classes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dyce_search.errors import CliParser

from ..errors import ExtractError
from ..exits import PAPER_EXIT_TYPES
from ..macs import MacsTable, macs_table
from .families import BY_NAME
from .registry import SUPPORTED, build_backbone


def count(name: str) -> MacsTable:
    """MACs of ``name`` and of the paper's five exits at every position (meta device)."""
    return macs_table(build_backbone(name, device="meta"), PAPER_EXIT_TYPES)


def shown_positions(table: MacsTable) -> list[int]:
    """First, middle and last early position (fewer when P < 3)."""
    last = len(table.positions) - 1
    return sorted({0, last // 2, last})


def _m(macs: int) -> str:
    return f"{macs / 1e6:.3f}"


def summary_rows(tables: Sequence[MacsTable]) -> list[str]:
    rows = ["| name | family | early positions P | input | MACs |", "|---|---|---|---|---|"]
    for t in tables:
        size = "x".join(map(str, t.input_size[1:]))
        rows.append(
            f"| `{t.backbone}` | {BY_NAME[t.backbone].title} | {len(t.positions)} | {size} | "
            f"{t.total_macs / 1e9:.3f} G |"
        )
    return rows


def exit_rows(tables: Sequence[MacsTable]) -> list[str]:
    types = [t.name for t in PAPER_EXIT_TYPES]
    rows = [
        "| name | position | backbone MACs [M] | " + " | ".join(f"{name} [M]" for name in types) + " |",
        "|---|---|---|" + "---|" * len(types),
    ]
    for t in tables:
        for p in shown_positions(t):
            exits = " | ".join(_m(m) for m in t.exit_macs[p])
            rows.append(f"| `{t.backbone}` | `{t.positions[p]}` ({p + 1}/{len(t.positions)}) | "
                        f"{_m(t.backbone_macs[p])} | {exits} |")
    return rows


def markdown(names: Sequence[str] = SUPPORTED) -> str:
    """Both tables for ``names``, as Markdown."""
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ExtractError(f"not built-in backbones: {unknown}; choose from {', '.join(SUPPORTED)}")
    tables = [count(name) for name in names]
    return "\n".join([*summary_rows(tables), "", *exit_rows(tables)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = CliParser(prog="python -m extract.backbones.table", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(SUPPORTED), help="backbones (default: every built-in one)")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(markdown(args.names))
    except ExtractError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
