"""Execute the shipped notebooks and store them with their outputs, or check that the stored outputs are current.

Readers see a notebook's figures and tables without running it, so the
notebooks under ``analysis/notebooks/`` are stored executed. Run after any
change that moves their numbers::

    python -m analysis.run_notebooks            # execute and rewrite every notebook in place
    python -m analysis.run_notebooks --check    # exit 1 if a stored table differs from a fresh run

Only the ``text/plain`` results of cells (tables and values) are compared:
printed lines carry search times and images depend on the matplotlib build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent / "notebooks"
ROOT = NOTEBOOK_DIR.parents[1]
#: Seconds one cell may run before the execution is abandoned.
CELL_TIMEOUT = 300


def notebooks() -> list[Path]:
    """The shipped notebooks, sorted by name."""
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def execute(path):
    """Run a notebook top to bottom from the repository root; returns the executed ``NotebookNode``.

    Raises ``nbclient.exceptions.CellExecutionError`` naming the failing cell.
    """
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    # figures go to the inline backend of the kernel, never to a window
    env_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                                         resources={"metadata": {"path": str(ROOT)}})
        client.execute()
    finally:
        if env_backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_backend
    return nb


def results(nb) -> list[tuple[int, str]]:
    """(cell index, text) of every ``text/plain`` cell result: what :func:`check` compares."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for o in cell.get("outputs", []):
            if o.get("output_type") == "execute_result" and "text/plain" in o.get("data", {}):
                out.append((i, o["data"]["text/plain"]))
    return out


def store(path) -> None:
    """Execute ``path`` and write it back with its outputs (atomically)."""
    import nbformat

    from dyce_search._io import write_bytes_atomic

    nb = execute(path)
    write_bytes_atomic(Path(path), (nbformat.writes(nb) + "\n").encode("utf-8"))


def check(path) -> list[str]:
    """Differences between the stored results of ``path`` and a fresh run (empty: current)."""
    import nbformat

    stored = results(nbformat.read(path, as_version=4))
    fresh = results(execute(path))
    if [i for i, _ in stored] != [i for i, _ in fresh]:
        return [f"{Path(path).name}: cells with results differ (stored {[i for i, _ in stored]}, "
                f"fresh {[i for i, _ in fresh]}); run python -m analysis.run_notebooks"]
    return [f"{Path(path).name}: cell {i} result differs from a fresh run; run python -m analysis.run_notebooks"
            for (i, a), (_, b) in zip(stored, fresh) if a != b]


def main(argv=None) -> int:
    from dyce_search.errors import CliParser

    p = CliParser(prog="python -m analysis.run_notebooks", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with a fresh run instead of rewriting")
    args = p.parse_args(argv)
    problems = []
    for path in notebooks():
        if args.check:
            problems += check(path)
        else:
            store(path)
            print(f"stored {path.relative_to(ROOT)} with outputs", file=sys.stderr)  # status, not data
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
