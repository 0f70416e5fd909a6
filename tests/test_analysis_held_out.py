"""analysis on held-out splits: curves with exact intervals, Table II on the test split and certified rows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from analysis import curves, tables
from analysis.displays import EnsembleDisplay, GeneralisationDisplay, MethodComparisonDisplay, TradeoffDisplay
from dyce_search import CacheError, ResultError, front, select
from dyce_search.synthetic import make_cache


@pytest.fixture(scope="module")
def splits():
    """Search, validation and test samples of one synthetic model, and the search split's front."""
    search = make_cache(backbone="resnet18", n_samples=1200, n_classes=20, seed=1)
    validation = make_cache(backbone="resnet18", n_samples=1500, n_classes=20, seed=2)
    test = make_cache(backbone="resnet18", n_samples=900, n_classes=20, seed=3)
    result = front(search, lambdas=np.linspace(0, 1, 11), progress=False)
    return search, validation, test, result


def test_synthetic_seeds_are_disjoint_samples_of_one_model(splits):
    search, validation, test, _ = splits
    assert len({c.samples_digest for c in (search, validation, test)}) == 3
    assert not set(search.sample) & set(test.sample)
    curves.check_same_model(search, test)


def test_held_out_curve_measures_the_search_front_unchanged(splits):
    search, _, test, result = splits
    curve = curves.held_out_curve(result, test, name="m")
    in_sample = curves.tradeoff_curve(result)
    # the same configurations as the search split's front, not the front re-picked on the test split
    assert sorted(curve["row"]) == sorted(in_sample["row"])
    measured = result.evaluate(test).reset_index(drop=True)
    for _, r in curve.iterrows():
        assert r["accuracy"] == pytest.approx(measured["accuracy"].iloc[int(r["row"])])
        assert r["rel_cost"] == pytest.approx(measured["rel_cost"].iloc[int(r["row"])])
    assert (np.diff(curve["rel_cost"]) >= 0).all()
    assert curve.attrs["base_accuracy"] == pytest.approx(curves.head_accuracy(test))
    # exact binomial intervals, as scipy computes them
    for _, r in curve.iloc[[0, len(curve) // 2, -1]].iterrows():
        k = int(round(r["accuracy"] * test.n_samples))
        ci = binomtest(k, test.n_samples).proportion_ci(0.95, method="exact")
        assert (r["accuracy_low"], r["accuracy_high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
        assert r["accuracy_low"] <= r["accuracy"] <= r["accuracy_high"]


def test_tradeoff_curves_on_held_out_splits(splits):
    search, _, test, result = splits
    f = curves.tradeoff_curves({"a": result, "b": result}, on={"a": test})
    assert set(map(tuple, f[["name", "split"]].drop_duplicates().to_numpy())) == {
        ("a", curves.HELD_OUT), ("a", curves.IN_SAMPLE), ("b", curves.IN_SAMPLE)}
    assert f.attrs["base_accuracy"]["a"] == pytest.approx(curves.head_accuracy(test))
    assert f.attrs["base_accuracy"]["b"] == pytest.approx(curves.head_accuracy(search))
    only = curves.tradeoff_curves({"a": result}, on=test, in_sample=False)
    assert set(only["split"]) == {curves.HELD_OUT}
    with pytest.raises(ResultError, match="unknown result"):
        curves.tradeoff_curves({"a": result}, on={"z": test})


def test_tradeoff_display_draws_bands_and_dashes_in_sample(splits):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    _, _, test, result = splits
    d = TradeoffDisplay.from_results({"a": result, "b": result}, on={"a": test}).plot()
    assert set(d.lines_) == {("a", curves.HELD_OUT), ("a", curves.IN_SAMPLE), ("b", curves.IN_SAMPLE)}
    assert d.lines_[("a", curves.IN_SAMPLE)].get_linestyle() == "--"
    assert d.lines_[("a", curves.HELD_OUT)].get_linestyle() == "-"
    # b has no held-out split: its only curve is solid, but its label says it is in-sample
    assert d.lines_[("b", curves.IN_SAMPLE)].get_linestyle() == "-"
    assert d.lines_[("b", curves.IN_SAMPLE)].get_label() == f"b, {curves.IN_SAMPLE}"
    bands = [c for c in d.ax_.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # only the held-out curve has intervals
    plt.close(d.figure_)
    m = MethodComparisonDisplay.from_results({"x": result}, on=test).plot()
    assert set(m.frame["split"]) == {curves.HELD_OUT} and len(m.ax_.collections) == 1
    plt.close(m.figure_)


def test_ensemble_display_on_test_split(splits):
    import matplotlib.pyplot as plt

    search, _, test, result = splits
    d = EnsembleDisplay.from_results(search, {"ensemble": result}, on=test).plot()
    alone = d.frame[d.frame["series"] == "standalone"]
    np.testing.assert_allclose(np.sort(alone["accuracy"]), np.sort(curves.standalone_exits(test)["accuracy"]))
    assert d.base_accuracy == pytest.approx(curves.head_accuracy(test))
    plt.close(d.figure_)
    with pytest.raises(CacheError):
        EnsembleDisplay.from_results(search, {"ensemble": result}, on=make_cache("resnet34", 50, 20))


def _naive_levels(result, cache, levels):
    """Cheapest configuration (or the original model) meeting each level on ``cache``, by brute force."""
    measured = result.evaluate(cache)
    costs = list(measured["rel_cost"]) + [1.0]
    drops = list(1 - measured["rel_accuracy"]) + [0.0]
    return [min(c for c, d in zip(costs, drops) if d <= level + 1e-12) for level in levels]


def test_held_out_levels_against_brute_force_with_bootstrap_interval(splits):
    _, _, test, result = splits
    levels = (0.2, 0.05, 0.01, 0.0)
    t = tables.held_out_levels(result, test, levels, n_boot=200, seed=3)
    np.testing.assert_allclose(t["rel_cost"], _naive_levels(result, test, levels))
    assert t["reached"].all()
    for _, r in t.iterrows():  # the chosen configuration's accuracy, with its exact interval
        ci = binomtest(int(round(r["accuracy"] * test.n_samples)), test.n_samples).proportion_ci(0.95, "exact")
        assert (r["accuracy_low"], r["accuracy_high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert (t["low"] <= t["high"]).all() and (t["high"] <= 1.0 + 1e-12).all()
    # the level at drop 0 can always fall back to the original model
    assert t["row"].iloc[-1] == -1 or t["rel_accuracy"].iloc[-1] >= 1.0 - 1e-12
    again = tables.held_out_levels(result, test, levels, n_boot=200, seed=3)
    pd.testing.assert_frame_equal(t, again)
    with pytest.raises(ValueError, match="n_boot"):
        tables.held_out_levels(result, test, levels, n_boot=0)


def test_bootstrap_interval_covers_the_population_level():
    """Percentile intervals of a level from 600-sample test splits cover the level of a large population."""
    search = make_cache(backbone="resnet18", n_samples=1500, n_classes=20, seed=11)
    result = front(search, lambdas=np.linspace(0, 1, 6), progress=False)
    population = make_cache(backbone="resnet18", n_samples=40_000, n_classes=20, seed=12)
    truth = tables.held_out_levels(result, population, (0.05,), n_boot=1)["rel_cost"].iloc[0]
    covered = 0
    draws = 12
    for seed in range(draws):
        t = tables.held_out_levels(result, make_cache("resnet18", 600, 20, seed=100 + seed), (0.05,), n_boot=300)
        covered += bool(t["low"].iloc[0] - 1e-9 <= truth <= t["high"].iloc[0] + 1e-9)
    # 95 % intervals: 12 draws miss more than 4 times with probability < 0.001 if coverage is nominal
    assert covered >= draws - 4


def test_certified_levels_and_held_out_table_ii(splits):
    search, validation, test, result = splits
    levels = (0.2, 0.05, 0.001)
    selected = select(result, validation, max_drop=list(levels), delta=0.1)
    cert = tables.certified_levels(selected, test)
    measured = selected.evaluate(test)
    np.testing.assert_allclose(cert["rel_cost"], measured["rel_cost"])
    np.testing.assert_array_equal(cert["held"], 1 - measured["rel_accuracy"].to_numpy() <= np.array(levels) + 1e-12)
    assert cert["fallback"].tolist() == selected.table["fallback"].tolist()
    assert (cert["accuracy_low"] <= cert["accuracy"]).all() and (cert["accuracy"] <= cert["accuracy_high"]).all()
    # 0.1 % cannot be certified from 1500 samples (0.999^n > 0.1 needs n < 2302): the original model
    assert cert["fallback"].iloc[-1] and cert["rel_cost"].iloc[-1] == pytest.approx(1.0)
    assert not cert["fallback"].iloc[0] and cert["rel_cost"].iloc[0] < 1.0

    targets = tables.table_ii({"m": result}, levels)  # stand-in for cheapest(): any search-split result
    long = tables.table_ii_held_out("m", result, result, selected, test, levels, n_boot=100)
    bases = list(dict.fromkeys(long["basis"]))
    assert bases == [tables.IN_SAMPLE_BASIS, tables.HELD_OUT_BASIS, tables.certified_basis(0.1)]
    np.testing.assert_allclose(long[long["basis"] == tables.IN_SAMPLE_BASIS]["rel_cost"], targets["rel_cost"])
    assert long[long["basis"] != tables.IN_SAMPLE_BASIS]["base_accuracy"].eq(curves.head_accuracy(test)).all()
    wide = tables.table_ii_wide(long)
    assert list(wide.columns[:2]) == ["basis", "base accuracy"]
    held_row = wide[wide["basis"] == tables.HELD_OUT_BASIS].iloc[0]
    assert "[" in held_row.iloc[2] and "–" in held_row.iloc[2]  # bootstrap interval
    cert_row = wide[wide["basis"] == tables.certified_basis(0.1)].iloc[0]
    assert cert_row.iloc[-1].startswith("100.0% (no exit certified)")
    with pytest.raises(ResultError, match="certifies levels"):
        tables.table_ii_held_out("m", result, result, selected, test, (0.05,), n_boot=10)
    with pytest.raises(ResultError, match="select"):
        tables.table_ii_held_out("m", result, result, result, test, levels, n_boot=10)


def test_wide_table_marks_a_certified_level_the_test_split_exceeds():
    long = pd.DataFrame({"model": "m", "basis": "certified", "base_accuracy": 0.9, "level": [0.05, 0.01],
                         "reached": True, "unit": "macs", "rel_cost": [0.4, 1.0], "held": [False, True], "fallback": [False, True]})
    wide = tables.table_ii_wide(long)
    assert wide.iloc[0, 2:].tolist() == ["40.0% — exceeded on test", "100.0% (no exit certified)"]


def test_generalisation_display_marks_certified_configurations(splits):
    import matplotlib.pyplot as plt

    search, validation, test, result = splits
    selected = select(result, validation, max_drop=[0.2, 0.05], delta=0.1)
    d = GeneralisationDisplay.from_result(result, test, search, selected=selected).plot()
    f = d.frame
    assert sorted(f[f["split"] == curves.HELD_OUT]["row"]) == sorted(f[f["split"] == curves.IN_SAMPLE]["row"])
    assert set(d.lines_) == {curves.HELD_OUT, curves.IN_SAMPLE}
    assert d.lines_[curves.IN_SAMPLE].get_linestyle() == "--"
    np.testing.assert_allclose(d.certified_.get_xdata(), selected.evaluate(test)["rel_cost"])
    assert d.base_accuracy[curves.HELD_OUT] == pytest.approx(curves.head_accuracy(test))
    plt.close(d.figure_)
    with pytest.raises(CacheError):
        GeneralisationDisplay.from_result(result, make_cache("resnet34", 50, 20), search)
