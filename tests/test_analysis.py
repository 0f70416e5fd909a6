"""analysis: compute functions against hand-checked values, and the Display classes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from analysis import curves, tables
from analysis.displays import (
    EnsembleDisplay,
    ExitDistributionDisplay,
    GeneralisationDisplay,
    MethodComparisonDisplay,
    ThresholdCurveDisplay,
    TradeoffDisplay,
)
from dyce_search import CacheError, Config, ExitCache, ResultError, SearchResult


# ----------------------------------------------------------------- fixtures


def tiny_cache(**overrides) -> ExitCache:
    """M = 4 samples, P = 2 positions, K = 2 exit types (type 1 absent at position 1).

    label             0  1  2  3
    p0 mlp-a pred     1  1  2  0   conf .2 .5 .9 .7   correct: F T T F
    p0 mlp-b pred     0  1  2  3   conf .6 .6 .6 .6   correct: all
    p1 mlp-a pred     0  0  2  3   conf .8 .4 .3 .95  correct: T F T T
    head pred         0  1  2  1   correct: T T T F   (A_ori = 0.75)
    MACs: backbone to p0 = 20, to p1 = 60, total 100; exits p0: 2, 5; p1: 4.
    """
    fields = dict(
        label=np.array([0, 1, 2, 3]),
        pred=np.array([[[1, 1, 2, 0], [0, 1, 2, 3]], [[0, 0, 2, 3], [-1, -1, -1, -1]]]),
        conf=np.array([[[0.2, 0.5, 0.9, 0.7], [0.6] * 4], [[0.8, 0.4, 0.3, 0.95], [np.nan] * 4]]),
        final_pred=np.array([0, 1, 2, 1]),
        final_conf=np.array([0.9, 0.8, 0.7, 0.6]),
        backbone_macs=np.array([20, 60]),
        exit_macs=np.array([[2, 5], [4, 0]]),
        available=np.array([[True, True], [True, False]]),
        total_macs=100,
        positions=("layer1", "layer2"),
        exit_types=("mlp-a", "mlp-b"),
        sample=np.arange(4),
        num_classes=4,
        metadata={"backbone": "toy", "dataset": "toyset", "split": "calibration"},
    )
    fields.update(overrides)
    return ExitCache(**fields)


def hand_result(rel_cost, rel_accuracy, a_ori=0.8, num_classes=10, lambdas=None) -> SearchResult:
    """A SearchResult whose metrics are given directly (configs are all-disabled placeholders)."""
    n = len(rel_cost)
    rel_accuracy = np.asarray(rel_accuracy, dtype=float)
    table = pd.DataFrame(
        {
            "lambda": np.linspace(0, 1, n) if lambdas is None else lambdas,
            "method": "single_pass",
            "objective": "paper",
            "threshold": "exact",
            "rel_cost": rel_cost,
            "rel_accuracy": rel_accuracy,
            "accuracy": rel_accuracy * a_ori,
            "cost": np.asarray(rel_cost, dtype=float) * 1e9,
            "seconds": 0.5,
        }
    )
    md = {"num_classes": num_classes, "total_macs": 10**9, "backbone": "hand", "positions": ["a"], "exit_types": ["x"]}
    return SearchResult(table, [Config.empty(1) for _ in range(n)], md)


# ------------------------------------------------------------------- Fig. 3


def test_threshold_curve_hand_values():
    f = curves.threshold_curve(tiny_cache(), position=0, exit_type="mlp-a", thresholds=[0.0, 0.5, 0.8, 1.0])
    # confidences .2 .5 .9 .7 with correctness F T T F; conf >= t exits
    assert f["n_exited"].tolist() == [4, 3, 1, 0]
    assert f["n_correct"].tolist() == [2, 2, 1, 0]
    np.testing.assert_allclose(f["exited_fraction"], [1.0, 0.75, 0.25, 0.0])
    np.testing.assert_allclose(f["exited_accuracy"], [0.5, 2 / 3, 1.0, np.nan])
    assert f.attrs["position"] == "layer1" and f.attrs["exit_type"] == "mlp-a"
    assert f.attrs["base_accuracy"] == pytest.approx(0.75)


def test_threshold_curve_defaults_to_largest_exit_and_checks_input():
    cache = tiny_cache()
    f = curves.threshold_curve(cache)
    assert f.attrs["exit_type"] == "mlp-b"  # 5 MACs > 2 MACs at position 0
    # default grid: 0 .. the exit's largest confidence (0.6 for mlp-b at position 0), where the most confident still exit
    assert len(f) == 201 and f["threshold"].iloc[-1] == pytest.approx(0.6)
    assert f["n_exited"].iloc[-1] == 4 and f["n_exited"].iloc[0] == 4
    assert curves.threshold_curve(cache, position="layer2").attrs["exit_type"] == "mlp-a"  # the only one there
    with pytest.raises(CacheError, match="not available"):
        curves.threshold_curve(cache, position=1, exit_type="mlp-b")
    with pytest.raises(CacheError, match="unknown position 'layer9'"):
        curves.threshold_curve(cache, position="layer9")
    with pytest.raises(CacheError, match="out of range"):
        curves.threshold_curve(cache, position=2)


def test_threshold_curve_without_labels_measures_agreement_with_head():
    f = curves.threshold_curve(tiny_cache(label=np.array([-1, 1, 2, 3])), 0, "mlp-a", [0.0])
    # head predicts 0 1 2 1; exit predicts 1 1 2 0 -> agrees on samples 1, 2
    assert f["n_correct"].tolist() == [2]
    assert f.attrs["labels_known"] is False and f.attrs["base_accuracy"] == 1.0


# --------------------------------------------------------------- Pareto, curves


def test_pareto_front_hand_values():
    t = pd.DataFrame(
        {
            "rel_cost": [0.5, 0.3, 0.3, 0.7, 0.6, 0.9, np.nan],
            "accuracy": [0.70, 0.60, 0.65, 0.69, 0.75, 0.75, 0.99],
        }
    )
    front = curves.pareto_front(t)
    # 0.3 keeps its better tie (0.65); 0.7/0.69 and 0.9/0.75 are dominated; NaN dropped
    assert front.index.tolist() == [2, 0, 4]
    assert front["rel_cost"].tolist() == [0.3, 0.5, 0.6]
    assert curves.pareto_front(t.iloc[:0]).empty


def test_pareto_front_matches_search_result_pareto():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        # coarse grids make ties common
        result = hand_result(rng.integers(1, 8, n) / 8, rng.integers(5, 10, n) / 10)
        mine = curves.tradeoff_curve(result, pareto=True)
        theirs = result.pareto().table
        np.testing.assert_array_equal(mine["rel_cost"], theirs["rel_cost"])
        np.testing.assert_array_equal(mine["rel_accuracy"], theirs["rel_accuracy"])


def test_tradeoff_curve_rows_and_base_accuracy():
    result = hand_result([0.9, 0.4, 0.6, 1.0], [1.0, 0.9, 0.85, 1.0], a_ori=0.8)
    f = curves.tradeoff_curve(result, name="m")
    assert f["row"].tolist() == [1, 0]  # 0.6/0.85 dominated by 0.4/0.9; 1.0/1.0 by 0.9/1.0
    assert (f["name"] == "m").all()
    assert f.attrs["base_accuracy"] == pytest.approx(0.8)
    assert f.attrs["search_seconds"] == pytest.approx(2.0)
    assert len(curves.tradeoff_curve(result, pareto=False)) == 4


def test_standalone_exits_hand_values():
    f = curves.standalone_exits(tiny_cache())
    assert list(zip(f["position_name"], f["exit_type_name"])) == [
        ("layer1", "mlp-a"),
        ("layer1", "mlp-b"),
        ("layer2", "mlp-a"),
    ]
    # (cumulative backbone MACs + exit MACs) / total MACs
    np.testing.assert_allclose(f["rel_cost"], [0.22, 0.25, 0.64])
    np.testing.assert_allclose(f["accuracy"], [0.5, 1.0, 0.75])
    np.testing.assert_allclose(f["rel_accuracy"], [0.5 / 0.75, 1.0 / 0.75, 1.0])
    # one unknown label: accuracy becomes agreement with the head (0 1 2 1), A_ori = 1, as in the searches
    g = curves.standalone_exits(tiny_cache(label=np.array([0, 1, -1, 3])))
    np.testing.assert_allclose(g["accuracy"], [0.5, 0.75, 0.5])
    assert g.attrs["base_accuracy"] == 1.0


def test_exit_distribution_hand_values():
    cache = tiny_cache()
    config = Config(np.array([0, 0]), np.array([0.6, 0.9]))
    f = curves.exit_distribution(cache, config)
    # p0 conf .2 .5 .9 .7 >= .6 -> samples 2, 3 leave; p1 conf of 0, 1 (.8, .4) < .9 -> head
    assert f["position_name"].tolist() == ["layer1", "layer2", "head"]
    assert f["n_exited"].tolist() == [2, 0, 2]
    assert f["fraction"].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(f["accuracy"], [0.5, np.nan, 1.0])  # head right on samples 0, 1
    only_p1 = curves.exit_distribution(cache, Config(np.array([-1, 0]), np.array([np.nan, 0.5])))
    assert only_p1["n_exited"].tolist() == [0, 2, 2]
    assert only_p1["exit_type_name"].isna().tolist() == [True, False, True]
    assert only_p1["exit_type_name"].iloc[1] == "mlp-a"


def test_exit_distributions_rows_and_sums():
    cache = tiny_cache()
    configs = [Config(np.array([0, 0]), np.array([t, t])) for t in (0.0, 0.5, 1.1)]
    result = SearchResult.from_configs(cache, configs, [0.1, 0.5, 0.9], method="single_pass", threshold="exact")
    f = curves.exit_distributions(cache, result, [0, 2])
    assert f.groupby("row")["fraction"].sum().tolist() == pytest.approx([1.0, 1.0])
    assert f[f["row"] == 0]["n_exited"].tolist() == [4, 0, 0]  # t = 0: everything leaves at p0
    assert f[f["row"] == 2]["n_exited"].tolist() == [0, 0, 4]  # t > 1: nothing leaves early
    with pytest.raises(ResultError, match="out of range"):
        curves.exit_distributions(cache, result, [3])


def test_check_same_model():
    a = tiny_cache()
    curves.check_same_model(a, tiny_cache(metadata={"backbone": "toy", "split": "test"}))
    with pytest.raises(CacheError, match="backbone"):
        curves.check_same_model(a, tiny_cache(metadata={"backbone": "other"}))
    with pytest.raises(CacheError, match=r"MACs differ \(total_macs: 100 vs 200\)"):
        curves.check_same_model(a, tiny_cache(total_macs=200))
    with pytest.raises(CacheError, match="positions"):
        curves.check_same_model(a, tiny_cache(positions=("x", "y")))


# ------------------------------------------------------------------ Table II


def test_required_cost_hand_values_and_not_reached():
    t = pd.DataFrame(
        {
            "lambda": [0.1, 0.2, 0.3, 0.4, 0.5],
            "rel_cost": [0.40, 0.55, 0.55, 0.70, 0.95],
            "rel_accuracy": [0.90, 0.96, 0.97, 0.985, 0.994],
            "accuracy": [0.72, 0.768, 0.776, 0.788, 0.7952],
        }
    )
    r = tables.required_cost(t, (0.05, 0.02, 0.005, 0.001))
    assert r["reached"].tolist() == [True, True, False, False]
    # drop <= 5%: rows 1 and 2 tie at 0.55; the more accurate (row 2) wins
    assert r["row"].tolist() == [2, 3, -1, -1]
    np.testing.assert_allclose(r["rel_cost"], [0.55, 0.70, np.nan, np.nan])
    np.testing.assert_allclose(r["lambda"], [0.3, 0.4, np.nan, np.nan])
    # 1 - 0.994 = 0.006 > 0.005 -> not reached (and never a silent zero)
    assert np.isnan(r["rel_cost"].iloc[2])


def test_required_cost_level_met_exactly_counts_as_reached():
    t = pd.DataFrame({"rel_cost": [0.8], "rel_accuracy": [1 - 0.02]})
    assert tables.required_cost(t, (0.02,))["reached"].tolist() == [True]


def test_required_cost_ignores_rows_without_finite_metrics():
    t = pd.DataFrame({"rel_cost": [np.nan, np.inf], "rel_accuracy": [1.0, 1.0]})
    r = tables.required_cost(t)
    assert not r["reached"].any() and r["rel_cost"].isna().all()
    wide = tables.table_ii_wide(tables.table_ii({"m": hand_result([np.nan], [1.0])}))
    assert wide.loc["m"].tolist()[1:] == ["not reached"] * 3


def test_required_cost_rejects_bad_levels():
    t = pd.DataFrame({"rel_cost": [0.8], "rel_accuracy": [1.0]})
    with pytest.raises(ValueError, match="levels"):
        tables.required_cost(t, (1.5,))
    with pytest.raises(ResultError, match="rel_accuracy"):
        tables.required_cost(t.drop(columns="rel_accuracy"))


def test_table_ii_text_and_class_check():
    results = {
        "big": hand_result([0.6, 0.8, 1.0], [0.96, 0.99, 1.0], a_ori=0.78),
        "small": hand_result([0.5, 0.9], [0.90, 0.97], a_ori=0.70),
    }
    long = tables.table_ii(results)
    assert long["model"].tolist() == ["big"] * 3 + ["small"] * 3
    wide = tables.table_ii_wide(long)
    assert wide.loc["big"].tolist() == ["78.00%", "60.0%", "80.0%", "100.0%"]
    # small: drop 3% at 90% MACs; nothing within 2%
    assert wide.loc["small"].tolist() == ["70.00%", "90.0%", "not reached", "not reached"]
    md = tables.to_markdown(wide)
    assert md.splitlines()[0] == "| model | base accuracy | MACs at drop ≤ 5.0% | MACs at drop ≤ 2.0% | MACs at drop ≤ 0.5% |"
    assert md.count("not reached") == 2
    with pytest.raises(ResultError, match="different class counts"):
        tables.table_ii({"a": hand_result([1.0], [1.0], num_classes=10), "b": hand_result([1.0], [1.0], num_classes=1000)})
    with pytest.raises(ResultError, match="at least one"):
        tables.table_ii({})


def test_rows_at_levels_merges_and_falls_back():
    result = hand_result([0.5, 0.7, 0.9], [0.96, 0.999, 1.0])
    rows, labels = tables.rows_at_levels(result)
    assert rows == [0, 1]
    assert labels == ["drop ≤ 5.0%: 50.0% MACs", "drop ≤ 2.0% / 0.5%: 70.0% MACs"]
    rows, labels = tables.rows_at_levels(hand_result([0.3, 0.4], [0.5, 0.6]))
    assert rows == [1] and labels[0].startswith("most accurate")


# ------------------------------------------------------------------- displays


@pytest.fixture(scope="module")
def synthetic():
    from dyce_search.synthetic import make_cache

    cal = make_cache(backbone="resnet50", n_samples=1500, n_classes=100, seed=1)
    test = make_cache(backbone="resnet50", n_samples=1500, n_classes=100, seed=2)
    P = cal.n_positions
    configs = []
    for i, t in enumerate(np.linspace(0.3, 1.0, 8)):
        k = np.full(P, 4)
        k[: i % 3] = -1
        configs.append(Config(k, np.where(k >= 0, t, np.nan)))
    result = SearchResult.from_configs(cal, configs, np.linspace(0, 1, 8), method="single_pass", threshold="exact",
                                       seconds=np.full(8, 0.25))
    return cal, test, result


def _check_plotted(display, n_lines):
    import matplotlib.pyplot as plt

    assert display.ax_ is not None and display.figure_ is display.ax_.figure
    assert len(display.ax_.get_lines()) >= n_lines
    assert display.ax_.get_xlabel() and display.ax_.get_ylabel()
    assert isinstance(display.frame, pd.DataFrame) and len(display.frame)
    plt.close(display.figure_)


def test_threshold_display(synthetic):
    import matplotlib.pyplot as plt

    cal, _, _ = synthetic
    d = ThresholdCurveDisplay.from_cache(cal, position="layer1.1")
    fig, ax = plt.subplots()
    assert d.plot(ax=ax) is d and d.ax_ is ax
    assert d.accuracy_line_.get_label() == "accuracy of exited samples"
    _check_plotted(d, 3)


def test_tradeoff_display(synthetic):
    cal, _, result = synthetic
    d = TradeoffDisplay.from_results({"a": result, "b": result.take([0, 1, 2])})
    assert d.plot() is d
    assert set(d.lines_) == {"a", "b"} and set(d.originals_) == {"a", "b"}
    assert d.originals_["a"].get_xdata()[0] == 1.0
    _check_plotted(d, 4)
    d2 = TradeoffDisplay.from_results({"a": result}).plot(x="absolute")
    assert d2.ax_.get_xlabel() == "GMACs per sample"
    _check_plotted(d2, 2)


def test_method_comparison_display_shows_times(synthetic):
    cal, _, result = synthetic
    d = MethodComparisonDisplay.from_results({"single-pass": result, "other": result.take([3, 4])}).plot()
    labels = [t.get_text() for t in d.ax_.get_legend().get_texts()]
    assert "single-pass (search 2.0 s)" in labels and "other (search 500 ms)" in labels
    _check_plotted(d, 3)


def test_ensemble_display(synthetic):
    cal, _, result = synthetic
    d = EnsembleDisplay.from_results(cal, {"ensemble": result}).plot()
    assert set(d.standalone_lines_) == set(cal.exit_types)
    assert d.standalone_lines_["mlp1"].get_linestyle() == "--"
    assert list(d.lines_) == ["ensemble"]
    assert (d.frame["series"] == "standalone").sum() == int(cal.available.sum())
    _check_plotted(d, 7)


def test_generalisation_display(synthetic):
    cal, test, result = synthetic
    d = GeneralisationDisplay.from_result(result, test, cal).plot()
    f = d.frame
    # the test curve shows the calibration front's configurations, not a front re-picked on test
    assert sorted(f[f["split"] == curves.HELD_OUT]["row"]) == sorted(f[f["split"] == curves.IN_SAMPLE]["row"])
    assert set(d.lines_) == {curves.HELD_OUT, curves.IN_SAMPLE} and d.certified_ is None
    _check_plotted(d, 4)
    other = tiny_cache()
    with pytest.raises(CacheError):
        GeneralisationDisplay.from_result(result, other, cal)


def test_exit_distribution_display(synthetic):
    cal, _, result = synthetic
    d = ExitDistributionDisplay.from_result(result, cal, rows=[0, 5], labels=["first", "sixth"]).plot(kind="line")
    assert list(d.artists_) == ["first", "sixth"]
    assert d.frame.groupby("label")["fraction"].sum().tolist() == pytest.approx([1.0, 1.0])
    assert d.ax_.get_xticklabels()[-1].get_text() == "head"
    _check_plotted(d, 2)
    bars = ExitDistributionDisplay.from_result(result, cal).plot()  # 16 positions: grouped bars
    first = next(iter(bars.artists_.values()))
    assert len(first.patches) == cal.n_positions + 1
    import matplotlib.pyplot as plt

    plt.close(bars.figure_)
    with pytest.raises(ValueError, match="kind"):
        ExitDistributionDisplay.from_result(result, cal).plot(kind="pie")


def test_single_type_baseline_commits_to_the_best_type(synthetic):
    from analysis.searches import single_type_baseline
    from dyce_search import run

    cal, _, _ = synthetic
    lambdas = np.linspace(0, 1, 6)
    result, name = single_type_baseline(cal, lambdas, progress=False)
    used = {int(k) for c in result.configs for k in c.exit_types if k >= 0}
    assert used <= {cal.exit_types.index(name)}
    scores = [run(cal, lambdas, method="baseline", baseline_type=k, progress=False).table["f"].sum()
              for k in range(cal.n_types)]
    assert result.table["f"].sum() == pytest.approx(min(scores))
    assert name == cal.exit_types[int(np.argmin(scores))]
    assert result.metadata["search_seconds"] > 0


def test_from_cache_constructors_run_the_searches(synthetic):
    cal, _, _ = synthetic
    lambdas = np.linspace(0, 1, 5)
    d = MethodComparisonDisplay.from_cache(cal, lambdas, iterative=False, progress=False).plot()
    names = list(d.frame["name"].unique())
    assert names[:2] == ["descent (front)", "single-pass"] and names[2].startswith("baseline: same t, ")
    _check_plotted(d, 4)
    e = EnsembleDisplay.from_cache(cal, lambdas, disabled=3, progress=False).plot()
    assert list(e.lines_) == ["ensemble (all positions)", "ensemble, first 3 positions disabled"]
    _check_plotted(e, 7)
