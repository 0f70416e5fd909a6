"""The shipped notebooks run top to bottom, so they cannot rot, and are stored with current outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from analysis import run_notebooks  # noqa: E402

NOTEBOOKS = run_notebooks.notebooks()


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["ablations.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_with_outputs(path):
    """A reader sees every result without running the notebook: each code cell ran, in order."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{path.name}: store it executed top to bottom (python -m analysis.run_notebooks)"
    shown = [c for c in code if not c.source.lstrip().startswith("def ")]  # cells that only define functions show nothing
    assert all(c.outputs for c in shown), f"{path.name}: a code cell has no output"
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "figures are stored"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_and_its_stored_tables_are_current(path):
    problems = run_notebooks.check(path)  # executes it; raises CellExecutionError naming a failing cell
    assert not problems, "\n".join(problems)
    stored = "\n".join(text for _, text in run_notebooks.results(nbformat.read(path, as_version=4)))
    assert "test split [95% bootstrap]" in stored and "search split (in-sample)" in stored
    assert "MACs at drop" in stored


def test_check_reports_a_stale_table(tmp_path, monkeypatch):
    path = NOTEBOOKS[0]
    nb = nbformat.read(path, as_version=4)
    i, _ = run_notebooks.results(nb)[0]
    for o in nb.cells[i].outputs:
        if o.get("output_type") == "execute_result":
            o["data"]["text/plain"] = o["data"]["text/plain"].replace("%", " percent", 1)
    stale = tmp_path / path.name
    nbformat.write(nb, stale)
    fresh = run_notebooks.results(nbformat.read(path, as_version=4))
    monkeypatch.setattr(run_notebooks, "execute", lambda p: nbformat.read(path, as_version=4))
    assert fresh and run_notebooks.check(stale) == [
        f"{path.name}: cell {i} result differs from a fresh run; run python -m analysis.run_notebooks"]
    assert run_notebooks.check(path) == []
