"""Cost units in the analysis: axis labels, x="absolute", Table II headers and ``python -m analysis --costs``."""

from __future__ import annotations

from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis import curves, tables
from analysis.__main__ import main
from analysis.displays import (
    EnsembleDisplay,
    ExitDistributionDisplay,
    GeneralisationDisplay,
    MethodComparisonDisplay,
    TradeoffDisplay,
)
from dyce_search import Costs, ResultError, load_result, run, select, split
from dyce_search.synthetic import make_cache

RELATIVE = {"macs": "relative MACs (share of the original model)",
            "ms": "relative latency (share of the original model)"}


def latency_profile(cache, backbone=None) -> Costs:
    """A hand-made latency profile: a fixed launch cost per segment on top of a MACs-proportional part,
    so that latency shares differ from MAC shares."""
    macs = Costs.from_cache(cache)
    return replace(macs, segment=0.2 + macs.segment * 1e-9, exit=0.05 + macs.exit * 1e-9, unit="ms",
                   backbone=backbone or macs.backbone)


@pytest.fixture(scope="module")
def model():
    cache = make_cache(backbone="resnet50", n_samples=600, n_classes=100, seed=3)
    search, validation, test = split(cache, (0.5, 0.25, 0.25), seed=0, names=("search", "validation", "test"))
    costs = latency_profile(cache)
    lambdas = [0.0, 0.3, 0.6, 1.0]
    by_unit = {"ms": run(search, lambdas, method="single_pass", costs=costs, progress=False),
               "macs": run(search, lambdas, method="single_pass", progress=False)}
    return search, validation, test, costs, by_unit


@pytest.mark.parametrize("unit", ["macs", "ms"])
def test_every_tradeoff_display_labels_the_axis_with_the_results_unit(model, unit):
    search, validation, test, costs, by_unit = model
    result = by_unit[unit]
    displays = [
        TradeoffDisplay.from_results({"a": result}).plot(),
        MethodComparisonDisplay.from_results({"single-pass": result}).plot(),
        EnsembleDisplay.from_results(search, {"ensemble": result}).plot(),
        GeneralisationDisplay.from_result(result, test, search,
                                          selected=select(result, validation, [0.5], risk="agreement")).plot(),
    ]
    for d in displays:
        assert d.ax_.get_xlabel() == RELATIVE[unit], type(d).__name__
        plt.close(d.figure_)


def test_ensemble_standalone_dots_use_the_searched_profile(model):
    search, _, _, costs, by_unit = model
    f = EnsembleDisplay.from_results(search, {"ensemble": by_unit["ms"]}).frame
    alone = f[f["series"] == "standalone"]
    assert (f["unit"] == "ms").all()
    expected = curves.standalone_exits(search, costs)["rel_cost"].to_numpy()
    np.testing.assert_allclose(alone["rel_cost"].to_numpy(), expected)
    assert not np.allclose(expected, curves.standalone_exits(search)["rel_cost"].to_numpy())


def test_absolute_x_is_the_cost_column_in_the_results_unit(model):
    _, _, _, costs, by_unit = model
    result = by_unit["ms"]
    d = TradeoffDisplay.from_results({"a": result}).plot(x="absolute")
    assert d.ax_.get_xlabel() == "latency per sample (ms)"
    front = curves.tradeoff_curve(result)
    np.testing.assert_allclose(d.lines_["a"].get_xdata(), front["cost"].to_numpy())
    assert d.originals_["a"].get_xdata()[0] == pytest.approx(costs.total)
    plt.close(d.figure_)
    macs = TradeoffDisplay.from_results({"a": by_unit["macs"]}).plot(x="absolute")
    assert macs.ax_.get_xlabel() == "GMACs per sample"
    np.testing.assert_allclose(macs.lines_["a"].get_xdata(), curves.tradeoff_curve(by_unit["macs"])["cost"] / 1e9)
    plt.close(macs.figure_)
    with pytest.raises(ValueError, match=r"x must be one of \('relative', 'absolute'\), got 'log'"):
        TradeoffDisplay.from_results({"a": result}).plot(x="log")


def test_curves_of_two_units_are_refused_on_one_axis(model):
    _, _, _, _, by_unit = model
    d = TradeoffDisplay.from_results({"latency": by_unit["ms"], "macs": by_unit["macs"]})
    with pytest.raises(ResultError, match=r"mix cost units \('ms': \['latency'\]; 'macs': \['macs'\]\)"):
        d.plot()
    with pytest.raises(ResultError, match="mix cost units"):
        MethodComparisonDisplay.from_results({"a": by_unit["ms"], "b": by_unit["macs"]}).plot()
    plt.close("all")


def test_table_ii_headers_and_columns_name_the_unit(model):
    _, _, _, costs, by_unit = model
    for unit, quantity in (("macs", "MACs"), ("ms", "latency")):
        long = tables.table_ii({"m": by_unit[unit]}, (0.5, 0.2))
        assert (long["unit"] == unit).all() and "total_macs" not in long and "rel_macs" not in long
        wide = tables.table_ii_wide(long)
        assert list(wide.columns) == ["base accuracy", f"{quantity} at drop ≤ 50.0%", f"{quantity} at drop ≤ 20.0%"]
        assert tables.to_markdown(wide).splitlines()[0] == (
            f"| model | base accuracy | {quantity} at drop ≤ 50.0% | {quantity} at drop ≤ 20.0% |")
    assert tables.table_ii({"m": by_unit["ms"]})["total_cost"].iloc[0] == pytest.approx(costs.total)
    mixed = tables.table_ii({"a": by_unit["ms"], "b": by_unit["macs"]}, (0.5,))
    with pytest.raises(ResultError, match=r"Table II rows mix cost units \('ms': \['a'\]; 'macs': \['b'\]\)"):
        tables.table_ii_wide(mixed)


def test_exit_distribution_labels_name_the_unit(model):
    search, _, _, _, by_unit = model
    _, labels = tables.rows_at_levels(by_unit["ms"], (0.5,))
    assert labels[0].endswith("% latency") or "% latency," in labels[0]
    d = ExitDistributionDisplay.from_result(by_unit["ms"], search, levels=(0.5,)).plot()
    assert all("MACs" not in t.get_text() for t in d.ax_.get_legend().get_texts())
    plt.close(d.figure_)


def test_unknown_units_are_shown_verbatim(model):
    search, _, _, costs, _ = model
    result = run(search, [0.5], method="single_pass", costs=replace(costs, unit="uJ"), progress=False)
    d = TradeoffDisplay.from_results({"a": result}).plot(x="absolute")
    assert d.ax_.get_xlabel() == "cost per sample (uJ)"
    plt.close(d.figure_)
    d = TradeoffDisplay.from_results({"a": result}).plot()
    assert d.ax_.get_xlabel() == "relative cost (uJ) (share of the original model)"
    plt.close(d.figure_)
    assert list(tables.table_ii_wide(tables.table_ii({"a": result}, (0.5,))).columns)[1] == "cost (uJ) at drop ≤ 50.0%"


# ------------------------------------------------------------ python -m analysis


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("units")
    r50 = make_cache(backbone="resnet50", n_samples=300, n_classes=50, seed=0)
    r18 = make_cache(backbone="resnet18", n_samples=300, n_classes=50, seed=1)
    profile = latency_profile(r50)
    profile.save(folder / "r50-ms.json")
    # the same positions and exit types as resnet50, but measured on another backbone
    latency_profile(make_cache(backbone="resnet34", n_samples=10, n_classes=50)).save(folder / "r34-ms.json")
    return {"r50": r50.write(folder / "r50.parquet"), "r18": r18.write(folder / "r18.parquet"),
            "test": make_cache(backbone="resnet50", n_samples=300, n_classes=50, seed=7).write(folder / "test.parquet"),
            "profile": folder / "r50-ms.json", "foreign": folder / "r34-ms.json", "costs": profile}


def test_cli_costs_labels_a_models_figures_and_tables_in_its_unit(cli_files, tmp_path):
    out = tmp_path / "report"
    code = main([str(cli_files["r50"]), str(cli_files["r18"]), "--test", str(cli_files["test"]),
                 "--costs", str(cli_files["profile"]), "--out", str(out), "--lambdas", "0,0.5,1", "--no-iterative",
                 "--disable-first", "0", "--quiet"])
    assert code == 0
    # every search and held-out measurement of resnet50 is in ms, resnet18 stays in MACs
    for name in ("front", "table2", "certified", "single-pass"):
        r = load_result(out / "results" / f"resnet50-synthetic-{name}.json")
        assert r.unit == "ms" and (r.table["unit"] == "ms").all(), name
        assert r.metadata["costs"]["segment"] == pytest.approx(cli_files["costs"].segment.tolist())
    assert load_result(out / "results" / "resnet18-synthetic-front.json").unit == "macs"
    # one Fig. 4 and one Table II per unit: the two models share no cost axis
    ms = pd.read_csv(out / "tables" / "table2-imagenet-synthetic-50-ms.csv", index_col=0)
    macs = pd.read_csv(out / "tables" / "table2-imagenet-synthetic-50-macs.csv", index_col=0)
    assert list(ms.index.unique()) == ["resnet50 (synthetic)"] and list(macs.index) == ["resnet18 (synthetic)"]
    assert [c for c in ms.columns if "drop" in c] == [f"latency at drop ≤ {v}" for v in ("5.0%", "2.0%", "0.5%")]
    assert [c for c in macs.columns if "drop" in c] == [f"MACs at drop ≤ {v}" for v in ("5.0%", "2.0%", "0.5%")]
    long = pd.read_csv(out / "tables" / "table2-long-imagenet-synthetic-50-ms.csv")
    assert set(long["unit"]) == {"ms"} and long["total_cost"].iloc[0] == pytest.approx(cli_files["costs"].total)
    assert set(long["basis"]) == {tables.IN_SAMPLE_BASIS, tables.HELD_OUT_BASIS, "certified (δ = 0.1), on test split"}
    fig4 = pd.read_csv(out / "data" / "fig4-tradeoff-imagenet-synthetic-50-ms.csv")
    assert set(fig4["unit"]) == {"ms"} and set(fig4["split"]) == {curves.HELD_OUT, curves.IN_SAMPLE}
    assert set(pd.read_csv(out / "data" / "generalisation-resnet50-synthetic.csv")["unit"]) == {"ms"}
    readme = (out / "README.md").read_text()
    assert f"| latency (ms) (profile {cli_files['profile']}) |" in readme
    assert "| MACs (the cache's MACs) |" in readme
    assert "latency (ms): resnet50 (synthetic); MACs: resnet18 (synthetic)" in readme
    assert "### imagenet-synthetic, 50 classes, latency (ms)" in readme and "### imagenet-synthetic, 50 classes, MACs" in readme
    assert "| model | basis | base accuracy | latency at drop ≤ 5.0% |" in readme


@pytest.mark.parametrize("argv, message", [
    (["{r50}", "--costs", "{foreign}"], r"r34-ms.json for 'resnet50 \(synthetic\)' does not fit its search cache: "
                                        r".*backbones differ \('resnet50' vs 'resnet34'\)[^-]*$"),
    (["{r18}", "--costs", "{profile}"], r"costs are for 15 positions x 5 exit types, the cache has 7 x 5"),
    (["{r50}", "--costs", "{profile}", "--costs", "{profile}"], r"2 --costs profiles for 1 CACHE arguments"),
    (["{r50}", "--costs", "{r50}"], r"r50.parquet: not valid JSON"),
])
def test_cli_refuses_a_profile_that_does_not_fit_before_searching(cli_files, tmp_path, capsys, argv, message):
    import re

    names = {k: str(v) for k, v in cli_files.items()}
    out = tmp_path / "o"
    code = main([a.format(**names) for a in argv] + ["--out", str(out), "--lambdas", "0.5", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(message, err), err
    assert not (out / "results").exists() and not (out / "README.md").exists()
