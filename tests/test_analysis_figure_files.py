"""Figure files are reproducible: the same figure saved by two processes gives the same bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One report figure (Fig. 4 style: curve, band, star, legend, percent ticks, unicode),
# saved through the report's helper; prints the digest of each file.
_SCRIPT = """
import hashlib, sys
import matplotlib
matplotlib.use("Agg")
import pandas as pd
from pathlib import Path
from analysis.displays import TradeoffDisplay
from analysis.report import save_figure

frame = pd.DataFrame({"name": ["resnet50"] * 3, "rel_cost": [0.4, 0.7, 0.95], "unit": "macs",
                      "accuracy": [0.6, 0.74, 0.76],
                      "accuracy_low": [0.58, 0.72, 0.75], "accuracy_high": [0.62, 0.76, 0.77]})
frame.attrs["base_accuracy"] = {"resnet50": 0.761}
d = TradeoffDisplay(frame, title="λ sweep ≥ 0.5").plot()
for p in save_figure(d, Path(sys.argv[1]), "fig"):
    print(p.name, hashlib.sha256(p.read_bytes()).hexdigest())
"""


def _digests(out: Path, env: dict) -> str:
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(out)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_report_figures_are_byte_identical_across_processes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    first = _digests(tmp_path / "a", dict(env, PYTHONHASHSEED="1"))
    time.sleep(1.1)  # a time stamp has one-second resolution: the second run saves in another second
    second = _digests(tmp_path / "b", dict(env, PYTHONHASHSEED="2"))
    assert first == second
    assert {line.split()[0] for line in first.splitlines()} == {"fig.png", "fig.pdf", "fig.csv"}
    assert b"CreationDate" not in (tmp_path / "a" / "figures" / "fig.pdf").read_bytes()


def test_source_date_epoch_sets_the_pdf_date(monkeypatch):
    import matplotlib.pyplot as plt

    from analysis.figure_files import figure_bytes

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    pdf = figure_bytes(fig, "pdf")
    assert b"/CreationDate (D:20231114221320Z)" in pdf
    assert figure_bytes(fig, "pdf") == pdf
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert b"CreationDate" not in figure_bytes(fig, "pdf")
    # a caller's own metadata still goes in, next to the reproducible defaults
    assert b"/Title (Fig. 4)" in figure_bytes(fig, "pdf", metadata={"Title": "Fig. 4"})
    plt.close(fig)


@pytest.mark.parametrize("suffix", ["png", "pdf"])
def test_save_figure_file_writes_the_format_of_the_suffix(tmp_path, suffix):
    import matplotlib.pyplot as plt

    from analysis.figure_files import save_figure_file

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure_file(fig, tmp_path / "sub" / f"f.{suffix}")
    head = path.read_bytes()[:8]
    assert head.startswith(b"\x89PNG" if suffix == "png" else b"%PDF")
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(
        save_figure_file(fig, tmp_path / f"g.{suffix}").read_bytes()).digest()
    plt.close(fig)


def test_report_index_date_follows_source_date_epoch(tmp_path, monkeypatch):
    from analysis.__main__ import main
    from analysis.figure_files import source_date
    from dyce_search.synthetic import make_cache

    cache = make_cache("resnet18", n_samples=200, n_classes=10, seed=0).write(tmp_path / "c.parquet")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert main([str(cache), "--out", str(tmp_path / "r"), "--lambdas", "0,1", "--no-iterative",
                 "--disable-first", "0", "--quiet"]) == 0
    assert "Generated 2023-11-14 22:13 UTC by" in (tmp_path / "r" / "README.md").read_text()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH must be a non-negative integer"):
        source_date()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert source_date() is None
