"""python -m analysis: the files it writes, and one-line errors with exit status 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

from analysis.__main__ import main, parse_lambdas
from dyce_search import load_result
from dyce_search.synthetic import make_cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caches")
    paths = {}
    for name, backbone, seed in (("cal", "resnet18", 0), ("test", "resnet18", 1), ("other", "resnet34", 2),
                                 ("validation", "resnet18", 3)):
        paths[name] = make_cache(backbone=backbone, n_samples=800, n_classes=50, seed=seed).write(folder / f"{name}.parquet")
    return paths


def test_parse_lambdas():
    assert parse_lambdas("0:1:0.25").tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len(parse_lambdas("0:1:0.01")) == 101
    assert parse_lambdas("0.1,0.9").tolist() == [0.1, 0.9]
    assert parse_lambdas("0.5").tolist() == [0.5]
    for bad in ("0:2:0.5", "1:0:0.1", "0:1:0", "a,b", "0:1", "1.5"):
        with pytest.raises(ValueError, match="lambdas"):
            parse_lambdas(bad)


def test_cli_writes_every_figure_table_and_index(cache_files, tmp_path, capsys):
    out = tmp_path / "report"
    code = main([str(cache_files["cal"]), "--test", str(cache_files["test"]), "--out", str(out),
                 "--lambdas", "0:1:0.1", "--quiet"])
    assert code == 0
    assert capsys.readouterr().err == ""
    slug = "resnet18-synthetic"
    expected = [
        "README.md",
        f"figures/fig3-threshold-{slug}",
        "figures/fig4-tradeoff",
        f"figures/fig5-methods-{slug}",
        f"figures/fig6-ensemble-{slug}",
        f"figures/generalisation-{slug}",
        f"figures/exit-distribution-{slug}",
        "tables/table2.csv",
        "tables/table2.md",
        "tables/table2-long.csv",
        f"results/{slug}-front.json",
        f"results/{slug}-certified.json",
        f"results/{slug}-table2.json",
        f"results/{slug}-single-pass.json",
        f"results/{slug}-iterative.json",
        f"results/{slug}-baseline-same-t-mlp5x1000.json",
    ]
    for name in expected:
        if name.startswith("figures/"):
            stem = name.split("/", 1)[1]
            for path in (out / f"{name}.png", out / f"{name}.pdf", out / "data" / f"{stem}.csv"):
                assert path.stat().st_size > 0, path
            assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
        else:
            assert (out / name).stat().st_size > 0, name
    assert not list(out.rglob("*.tmp")), "temporary files left behind"

    readme = (out / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert links and all((out / link).exists() for link in links)
    for stem in ("fig3", "fig4", "fig5", "fig6", "generalisation", "exit-distribution"):
        assert any(stem in link and link.endswith(".png") for link in links), stem
    assert "## Table II" in readme

    table = pd.read_csv(out / "tables" / "table2.csv", index_col=0)
    assert list(table.columns) == ["basis", "base accuracy", "MACs at drop ≤ 5.0%", "MACs at drop ≤ 2.0%",
                                   "MACs at drop ≤ 0.5%"]
    assert table["basis"].tolist() == ["search split (in-sample)", "test split (best in hindsight)",
                                       "certified (δ = 0.1), on test split"]
    assert table.iloc[1, 2].count("[") == 1  # bootstrap interval on the test split
    # the test cache was halved: one half certifies, the other reports
    assert "| validation (select) | half of" in readme and "| test | other half of" in readme
    certified = load_result(out / "results" / f"{slug}-certified.json")
    assert certified.metadata["method"] == "select" and certified.metadata["validation"]["n_samples"] == 400
    assert certified.metadata["validation"]["split"] == "val/validation"
    fig4 = pd.read_csv(out / "data" / "fig4-tradeoff.csv")
    assert set(fig4["split"]) == {"test split", "search split (in-sample)"}
    held = fig4[fig4["split"] == "test split"]
    assert (held["accuracy_low"] <= held["accuracy"]).all() and (held["accuracy"] <= held["accuracy_high"]).all()
    assert load_result(out / "results" / f"{slug}-single-pass.json").table["lambda"].size == 11
    front = load_result(out / "results" / f"{slug}-front.json")
    assert front.metadata["method"] == "front" and (front.table["method"] == "cheapest").any()
    targets = load_result(out / "results" / f"{slug}-table2.json").table
    assert targets["target"].tolist() == [0.05, 0.02, 0.005] and targets["method"].eq("cheapest").all()
    legend_data = pd.read_csv(out / "data" / f"fig5-methods-{slug}.csv")
    assert list(dict.fromkeys(legend_data["name"])) == [
        "descent (front)", "single-pass", "iterative", "baseline: same t, mlp5x1000"]


def test_cli_levels_reached_from_one_lambda_and_no_iterative(cache_files, tmp_path):
    out = tmp_path / "cheap"
    # lambda = 0 alone finds only the cheapest configurations, none within 5 % of the original
    # accuracy; Table II still has every level, because cheapest() searches for each level itself
    assert main([str(cache_files["cal"]), "--out", str(out), "--lambdas", "0", "--no-iterative",
                 "--disable-first", "7", "--quiet"]) == 0
    table = pd.read_csv(out / "tables" / "table2.csv", index_col=0)
    assert not (table.iloc[0, 2:] == "not reached").any()
    readme = (out / "README.md").read_text()
    assert "ablation skipped: the cache has only 7 early positions" in readme
    assert "iterative search was not run" in readme
    assert not (out / "results" / "resnet18-synthetic-iterative.json").exists()
    assert not list((out / "figures").glob("generalisation-*"))
    assert "every figure and table below is in-sample" in readme
    assert set(pd.read_csv(out / "data" / "fig4-tradeoff.csv")["split"]) == {"search split (in-sample)"}
    assert table["basis"].eq("search split (in-sample)").all()


def test_cli_several_backbones_share_fig4_and_table(cache_files, tmp_path):
    out = tmp_path / "two"
    assert main([str(cache_files["cal"]), str(cache_files["other"]), "--out", str(out), "--lambdas", "0:1:0.2",
                 "--no-iterative", "--compare-on", "1", "--quiet"]) == 0
    table = pd.read_csv(out / "tables" / "table2.csv", index_col=0)
    assert list(table.index) == ["resnet18 (synthetic)", "resnet34 (synthetic)"]
    fig4 = pd.read_csv(out / "data" / "fig4-tradeoff.csv")
    assert set(fig4["name"]) == {"resnet18 (synthetic)", "resnet34 (synthetic)"}
    assert (out / "figures" / "fig5-methods-resnet34-synthetic.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["{cal}", "--test", "{other}"], "test cache .* backbone"),
        (["{cal}", "--test", "{test}", "--test", "{test}"], "2 --test caches for 1"),
        (["{cal}", "--validation", "{test}"], "1 --validation caches for 0 --test"),
        (["{cal}", "--test", "{test}", "--validation", "{test}"], "validation and test caches .* same samples"),
        (["{cal}", "--test", "{cal}"], "exactly the samples of the search cache"),
        (["{cal}", "--test", "{test}", "--delta", "1.5"], "delta"),
        (["{missing}"], "no such file"),
        (["{cal}", "--lambdas", "0:2:0.1"], "--lambdas"),
        (["{cal}", "--fig3-position", "layer9.9"], "unknown position"),
        (["{cal}", "--compare-on", "3"], "compare_on"),
        (["{cal}", "--bogus"], "unrecognized arguments"),
        (["--synthetic", "resnet7"], "resnet7"),
        ([], "at least one CACHE"),
    ],
)
def test_cli_bad_input_one_line_exit_2(cache_files, tmp_path, capsys, args, message):
    names = {k: str(v) for k, v in cache_files.items()}
    names["missing"] = str(tmp_path / "nope.parquet")
    argv = [a.format(**names) for a in args] + ["--out", str(tmp_path / "o"), "--quiet"]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(message, err), err
    assert not (tmp_path / "o" / "README.md").exists()


def test_test_flag_leaves_the_positional_caches_alone():
    from analysis.__main__ import build_parser

    # nargs='+' used to take B as a second test cache, leaving no CACHE at all
    args = build_parser().parse_args(["--test", "A.parquet", "B.parquet", "--out", "x"])
    assert args.caches == ["B.parquet"] and args.test == ["A.parquet"]
    args = build_parser().parse_args(["C1", "C2", "--test", "T1", "--test", "T2", "--validation", "V1", "--out", "x"])
    assert args.caches == ["C1", "C2"] and args.test == ["T1", "T2"] and args.validation == ["V1"]


def test_module_entry_point_exit_status(cache_files, tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "analysis", str(cache_files["cal"]), "--test", str(cache_files["other"]),
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr


def test_cache_names_are_unique_and_file_safe():
    from analysis.report import name_caches, slugify, task_key

    a = make_cache(backbone="resnet18", n_samples=50, n_classes=10, seed=0)
    b = make_cache(backbone="resnet18", n_samples=50, n_classes=10, seed=1)
    named = name_caches([a, b, a])
    assert len({n.name for n in named}) == 3 and len({n.slug for n in named}) == 3
    assert named[0].name.startswith("resnet18 (synthetic)")
    assert slugify("ResNet-152 (synthetic) #2") == "resnet-152-synthetic-2"
    assert slugify("///") == "model"
    assert task_key(a) == task_key(b) != task_key(make_cache(backbone="resnet18", n_samples=50, n_classes=20))


def test_cli_separate_validation_cache(cache_files, tmp_path):
    out = tmp_path / "validated"
    assert main([str(cache_files["cal"]), "--test", str(cache_files["test"]), "--validation",
                 str(cache_files["validation"]), "--out", str(out), "--lambdas", "0:1:0.25", "--no-iterative",
                 "--delta", "0.2", "--quiet"]) == 0
    certified = load_result(out / "results" / "resnet18-synthetic-certified.json")
    assert certified.metadata["delta"] == 0.2 and certified.metadata["validation"]["n_samples"] == 800
    readme = (out / "README.md").read_text()
    assert f"| validation (select) | {cache_files['validation']} |" in readme
    table = pd.read_csv(out / "tables" / "table2.csv", index_col=0)
    assert "certified (δ = 0.2), on test split" in table["basis"].tolist()


def test_cli_synthetic_models_with_their_own_test_split(cache_files, tmp_path):
    out = tmp_path / "synthetic"
    assert main([str(cache_files["cal"]), "--synthetic", "resnet18", "--synthetic-samples", "600",
                 "--synthetic-test-samples", "600", "--out", str(out), "--lambdas", "0:1:0.5", "--no-iterative",
                 "--quiet"]) == 0
    # 50 vs 1000 classes: one Table II per task
    table = pd.concat([pd.read_csv(p) for p in sorted((out / "tables").glob("table2-imagenet*.csv"))])
    # the file cache has no test split: in-sample only; the synthetic model gets all three rows
    assert table.groupby("model")["basis"].apply(list).to_dict() == {
        "resnet18 (synthetic) val": ["search split (in-sample)"],
        "resnet18 (synthetic) val #2": ["search split (in-sample)", "test split (best in hindsight)",
                                    "certified (δ = 0.1), on test split"],
    }
    readme = (out / "README.md").read_text()
    assert "| resnet18 (synthetic) val #2 | test | other half of synthetic resnet18, 600 other samples (seed 1)" in readme


def test_status_goes_to_stderr_and_search_bars_move_inside_steps(cache_files, tmp_path, capsys, monkeypatch):
    import dyce_search.search as search_module
    from analysis.report import ReportOptions, _run_options

    asked = []
    real = search_module._progress

    def recording(progress, total, desc):
        asked.append((desc, progress))
        return real(progress, total, desc)

    monkeypatch.setattr(search_module, "_progress", recording)
    out = tmp_path / "report"
    assert main([str(cache_files["cal"]), "--out", str(out), "--lambdas", "0:1:0.5"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing but data would belong there
    assert f"index: {out / 'README.md'}" in captured.err
    # every search after the compile warm-up may draw its own per-lambda bar (tqdm decides: a terminal only)
    wanted = {desc for desc, progress in asked if progress is None}
    assert {"front: descent sweep", "iterative search", "single_pass search"} <= wanted, asked
    from analysis.report import NamedCache

    quiet = ReportOptions(lambdas=[0.5], progress=False)
    assert _run_options(quiet, NamedCache("m", None))["progress"] is False
