"""``python -m dyce_search``: lambda grids, options, error reporting and real searches."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dyce_search.cli import build_parser, main, parse_lambdas, summary_table
from dyce_search.costs import Costs
from dyce_search.result import load_result
from dyce_search.synthetic import make_cache


@pytest.fixture(scope="module")
def cache_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    calibration = make_cache("resnet18", n_samples=600, n_classes=10, seed=1)
    test = make_cache("resnet18", n_samples=400, n_classes=10, seed=2)
    calibration.write(folder / "calibration.parquet")
    test.write(folder / "test.parquet")
    return folder, calibration, test


def test_lambda_grid_is_exact_and_inclusive():
    grid = parse_lambdas("0:1:0.01")
    assert grid.shape == (101,) and grid[0] == 0.0 and grid[-1] == 1.0
    assert grid[7] == 0.07 and grid[29] == 0.29  # no 0.07000000000000001
    assert parse_lambdas("0:1:0.25").tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_lambdas("0.2:0.2:0.1").tolist() == [0.2]
    assert parse_lambdas("0.1,0.5, 1").tolist() == [0.1, 0.5, 1.0]
    assert parse_lambdas("0.3").tolist() == [0.3]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("a", "cannot parse"),
        ("0:1", "cannot parse"),
        ("0:1:0", "step must be > 0"),
        ("0:1:-0.1", "step must be > 0"),
        ("1:0:0.1", "below start"),
        ("0:nan:0.1", "non-finite"),
        ("0.5,1.5", r"in \[0, 1\], got 1.5"),
        ("nan", r"in \[0, 1\]"),
        ("-0.1:1:0.1", r"in \[0, 1\], got -0.1"),
    ],
)
def test_bad_lambdas(text, match):
    with pytest.raises(ValueError, match=match):
        parse_lambdas(text)


def test_help_documents_every_option():
    text = build_parser().format_help()
    for option in (
        "CACHE",
        "--method",
        "single_pass",
        "iterative",
        "baseline",
        "--lambdas",
        "--threshold",
        "exact",
        "bounded",
        "--objective",
        "normalized",
        "--costs",
        "--test",
        "--out",
        "--max-rounds",
        "--baseline-type",
        "--quiet",
        "descent",
        "--max-drop",
        "--max-cost",
        "--front",
    ):
        assert option in text, option


def _error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_errors_are_one_line_and_status_2(tmp_path, capsys, cache_files):
    folder, calibration, _ = cache_files
    cache = str(folder / "calibration.parquet")
    assert main([str(tmp_path / "missing.parquet")]) == 2
    assert "missing.parquet" in _error_line(capsys)
    (tmp_path / "junk.parquet").write_text("not parquet")
    assert main([str(tmp_path / "junk.parquet")]) == 2
    assert "junk.parquet" in _error_line(capsys)
    assert main([cache, "--lambdas", "0:2:0.5"]) == 2
    assert "--lambdas" in _error_line(capsys)
    assert main([cache, "--out", str(tmp_path / "r.csv")]) == 2
    assert ".json or .parquet" in _error_line(capsys)
    assert main([cache, "--max-rounds", "0"]) == 2
    assert "--max-rounds" in _error_line(capsys)
    assert main([cache, "--costs", str(tmp_path / "none.json")]) == 2
    assert "none.json" in _error_line(capsys)
    wrong = Costs(np.ones(3), np.ones((2, 5)), unit="ms")
    wrong.save(tmp_path / "wrong.json")
    assert main([cache, "--costs", str(tmp_path / "wrong.json")]) == 2
    assert "2 positions" in _error_line(capsys)
    assert main([cache, "--test", str(tmp_path / "none.parquet")]) == 2
    assert "none.parquet" in _error_line(capsys)
    assert main([cache, "--method", "baseline", "--baseline-type", "nope", "--lambdas", "0.5"]) == 2
    assert "nope" in _error_line(capsys)
    assert main([cache, "--threshold", "bounded"]) == 2
    assert "supports threshold 'exact'" in _error_line(capsys)
    assert main([cache, "--max-drop", "0.05,x"]) == 2
    assert "--max-drop" in _error_line(capsys)
    assert main([cache, "--max-drop", "1.5"]) == 2
    assert "max_drop" in _error_line(capsys)
    assert main([cache, "--max-cost", "0.5", "--method", "iterative"]) == 2
    assert "--method iterative" in _error_line(capsys)
    assert main([cache, "--lambdas", "0:1:1e-12"]) == 2
    assert "too many" in _error_line(capsys)


def test_module_entry_point_exit_status():
    done = subprocess.run(
        [sys.executable, "-m", "dyce_search", "/nonexistent/cache.parquet"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: /nonexistent/cache.parquet: no such file"]
    assert "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "dyce_search", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--baseline-type" in done.stdout


def test_search_prints_summary_and_saves(tmp_path, capsys, cache_files):
    folder, calibration, test = cache_files
    out = tmp_path / "result.json"
    status = main(
        [
            str(folder / "calibration.parquet"),
            "--lambdas",
            "0.1,0.6",
            "--test",
            str(folder / "test.parquet"),
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    header = captured.out.splitlines()[0].split()
    assert header == [
        "lambda",
        "rel_cost",
        "rel_accuracy",
        "accuracy",
        "n_exits",
        "seconds",
        "test_rel_cost",
        "test_rel_accuracy",
        "test_accuracy",
    ]
    rows = [line.split() for line in captured.out.splitlines()[1:3]]
    assert [float(r[0]) for r in rows] == [0.1, 0.6]
    # stdout is the table alone (pipeable); the status line goes to stderr
    assert len(captured.out.splitlines()) == 3 and f"saved 2 configurations to {out}" in captured.err
    result = load_result(out)
    assert len(result) == 2 and result.metadata["method"] == "descent"
    assert result.metadata["positions"] == list(calibration.positions)
    test_table = result.evaluate(test)
    for row, expected in zip(rows, test_table.itertuples()):
        assert float(row[6]) == pytest.approx(expected.rel_cost, abs=5e-5)
        assert float(row[7]) == pytest.approx(expected.rel_accuracy, abs=5e-5)
    assert json.loads(out.read_text())["format"] == "dyce-search-result"


@pytest.mark.parametrize(
    "options",
    [
        ["--method", "iterative", "--max-rounds", "2", "--threshold", "bounded"],
        ["--method", "baseline", "--baseline-type", "best", "--objective", "normalized"],
        ["--method", "baseline", "--baseline-type", "mlp1"],
        ["--method", "baseline", "--baseline-type", "1"],
    ],
)
def test_methods_and_options_reach_the_search(tmp_path, capsys, cache_files, options):
    folder, calibration, _ = cache_files
    out = tmp_path / "r.parquet"
    status = main([str(folder / "calibration.parquet"), "--lambdas", "0.5", "--quiet", "--out", str(out), *options])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out == ""  # --quiet: no table
    result = load_result(out)
    md = result.metadata
    assert md["method"] == options[1]
    if "--threshold" in options:
        assert md["threshold"] == "bounded"
    if "--objective" in options:
        assert md["objective"] == "normalized"
    if options[-1] in ("mlp1", "1"):
        k = 0 if options[-1] == "mlp1" else 1
        assert {t for c in result.configs for t in c.exit_types[c.enabled]} <= {k}


def test_cost_profile_is_used(tmp_path, capsys, cache_files):
    folder, calibration, _ = cache_files
    macs = Costs.from_cache(calibration)
    profile = Costs(macs.segment * 1e-9, macs.exit * 1e-9, unit="ms", positions=calibration.positions,
                    exit_types=calibration.exit_types)
    profile.save(tmp_path / "latency.json")
    out = tmp_path / "r.json"
    status = main([str(folder / "calibration.parquet"), "--lambdas", "0.5", "--costs", str(tmp_path / "latency.json"),
                   "--quiet", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    result = load_result(out)
    assert result.metadata["cost_unit"] == "ms"
    assert result.table["cost"][0] == pytest.approx(result.table["rel_cost"][0] * profile.total, rel=1e-12)


@pytest.mark.parametrize(
    "options, column, values",
    [
        (["--max-drop", "0.05,0.005"], "target", [0.05, 0.005]),
        (["--max-cost", "0.5"], "target", [0.5]),
    ],
)
def test_budget_targets(tmp_path, capsys, cache_files, options, column, values):
    folder, calibration, _ = cache_files
    out = tmp_path / "targets.json"
    status = main([str(folder / "calibration.parquet"), "--lambdas", "0:1:0.25", "--out", str(out), *options])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out.splitlines()[0].split()[0] == "target"
    result = load_result(out)
    assert result.table[column].tolist() == values
    assert result.table["lambda"].isna().all() and result.table["feasible"].all()
    if options[0] == "--max-drop":
        assert (1 - result.table["rel_accuracy"] <= result.table["target"] + 1e-12).all()
    else:
        assert (result.table["rel_cost"] <= result.table["target"] + 1e-12).all()


def test_front(tmp_path, capsys, cache_files):
    folder, calibration, _ = cache_files
    out = tmp_path / "front.parquet"
    assert main([str(folder / "calibration.parquet"), "--front", "--lambdas", "0:1:0.1", "--quiet",
                 "--out", str(out)]) == 0
    result = load_result(out)
    assert result.metadata["method"] == "front"
    assert (np.diff(result.table["rel_cost"].to_numpy()) >= 0).all()


def test_select_on_writes_a_certified_result(tmp_path, capsys, cache_files):
    folder, calibration, test = cache_files
    out = tmp_path / "certified.json"
    status = main([str(folder / "calibration.parquet"), "--select-on", str(folder / "test.parquet"),
                   "--max-drop", "0.05,0.2", "--lambdas", "0:1:0.25", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out.splitlines()[0].split()[:3] == ["target", "rel_cost", "rel_accuracy"]
    result = load_result(out)
    assert result.metadata["method"] == "select" and result.table["certified"].all()
    assert result.table["target"].tolist() == [0.05, 0.2]
    calibration_path = str(folder / "calibration.parquet")
    assert main([calibration_path, "--select-on", calibration_path, "--max-drop", "0.05"]) == 2
    assert "certify on another split" in _error_line(capsys)
    assert main([calibration_path, "--select-on", str(folder / "test.parquet")]) == 2
    assert "--select-on needs --max-drop" in _error_line(capsys)
    assert main([calibration_path, "--delta", "0.2"]) == 2
    assert "--select-on only" in _error_line(capsys)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_machine_readable_summary_parses_and_holds_the_result(tmp_path, capsys, cache_files, fmt):
    folder, calibration, test = cache_files
    out = tmp_path / "result.parquet"
    argv = [str(folder / "calibration.parquet"), "--lambdas", "0.1,0.35,0.6", "--test", str(folder / "test.parquet"),
            "--out", str(out), "--format", fmt]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"saved 3 configurations to {out}" in captured.err and "saved" not in captured.out
    parsed = (pd.read_csv(io.StringIO(captured.out)) if fmt == "csv"
              else pd.DataFrame(json.loads(captured.out)))
    result = load_result(out)
    expected = summary_table(result, result.evaluate(test))
    assert list(parsed.columns) == list(expected.columns)
    # full precision, not the table's four decimals
    for column in expected.columns:
        if column == "seconds":
            continue
        np.testing.assert_allclose(parsed[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-14)


def test_json_summary_writes_missing_values_as_null(tmp_path, capsys, cache_files):
    folder, _, _ = cache_files
    assert main([str(folder / "calibration.parquet"), "--max-drop", "0.5,0.0", "--lambdas", "0,1",
                 "--format", "json"]) == 0
    text = capsys.readouterr().out
    rows = json.loads(text)  # strict JSON: no NaN tokens
    assert "NaN" not in text and [r["target"] for r in rows] == [0.5, 0.0]
    assert all(r["lambda"] is None for r in rows)


def test_format_is_a_checked_choice(capsys, cache_files):
    folder, _, _ = cache_files
    with pytest.raises(SystemExit) as stop:
        main([str(folder / "calibration.parquet"), "--format", "xml"])
    assert stop.value.code == 2 and "invalid choice: 'xml'" in _error_line(capsys)
