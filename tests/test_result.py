"""SearchResult: table, configs, pareto, evaluate on another cache, JSON/Parquet files."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dyce_search import ResultError
from dyce_search.cache import ExitCache
from dyce_search.config import Config
from dyce_search.costs import Costs
from dyce_search.evaluation import evaluate
from dyce_search.objective import reference_labels
from dyce_search.result import COLUMNS, SearchResult, load_result

from tests import naive
from tests.strategies import configs, exit_caches, random_cache, random_config, random_cost_profile, random_costs

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _result(data, n_rows=None, cache=None, costs=None, objective="paper"):
    cache = cache or data.draw(exit_caches(labels="known"))
    n = n_rows if n_rows is not None else data.draw(st.integers(0, 6))
    cfgs = [data.draw(configs(cache)) for _ in range(n)]
    lambdas = sorted(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n, unique=True)))
    seconds = [0.5 * i for i in range(n)]
    return cache, SearchResult.from_configs(
        cache, cfgs, lambdas, method="single_pass", threshold="exact", objective=objective, costs=costs, seconds=seconds
    )


def assert_same_result(a: SearchResult, b: SearchResult):
    assert len(a) == len(b)
    assert a.metadata == b.metadata
    for ca, cb in zip(a.configs, b.configs):
        assert ca == cb
        assert ca.thresholds.tobytes() == cb.thresholds.tobytes()  # bit-exact thresholds
    ta, tb = a.table, b.table
    assert list(ta.columns) == list(tb.columns)
    assert ta.dtypes.to_dict() == tb.dtypes.to_dict()
    for column in ta.columns:
        for x, y in zip(ta[column], tb[column]):
            if isinstance(x, list):
                np.testing.assert_array_equal(np.asarray(x, float), np.asarray(y, float))
            elif isinstance(x, float) and math.isnan(x):
                assert isinstance(y, float) and math.isnan(y)
            else:
                assert x == y, column


@SETTINGS
@given(data=st.data())
def test_from_configs_table_matches_evaluate(data):
    cache, result = _result(data, cache=None)
    table = result.table
    assert list(table.columns) == list(COLUMNS)
    assert len(result) == len(table)
    f_defined = bool(np.mean(cache.final_pred == reference_labels(cache)[0]) > 0)
    for i, config in enumerate(result.configs):
        row = table.iloc[i]
        if f_defined:
            ev = evaluate(cache, config, lam=row["lambda"])
            assert row["f"] == ev.objective
        else:  # A_ori = 0: Eq. 10 and 12 are undefined; the table says NaN, evaluate(lam=...) refuses
            with pytest.raises(ValueError, match="A_ori is 0"):
                evaluate(cache, config, lam=row["lambda"])
            ev = evaluate(cache, config)
            assert math.isnan(row["f"])
        assert row["rel_cost"] == ev.rel_cost and np.array_equal(row["rel_accuracy"], ev.rel_accuracy, equal_nan=True)
        assert row["accuracy"] == ev.accuracy and row["cost"] == ev.cost
        assert row["exits"] == ev.exits.tolist()
        assert row["n_exits"] == int(config.enabled.sum())
        assert row["exit_types"] == config.exit_types.tolist()
        np.testing.assert_array_equal(row["thresholds"], config.thresholds)
        assert (row["method"], row["objective"], row["threshold"]) == ("single_pass", "paper", "exact")
    md = result.metadata
    assert md["positions"] == list(cache.positions) and md["exit_types"] == list(cache.exit_types)
    assert md["num_classes"] == cache.num_classes and md["cost_unit"] == "macs"
    for key in ("method", "threshold", "objective", "backbone", "weights", "dataset", "split", "synthetic", "total_macs"):
        assert key in md


@SETTINGS
@given(data=st.data(), suffix=st.sampled_from([".json", ".parquet"]))
def test_file_round_trip_is_exact(tmp_path_factory, data, suffix):
    cache = data.draw(exit_caches(labels="known"))
    costs = data.draw(st.one_of(st.none(), random_costs(cache)))
    _, result = _result(data, cache=cache, costs=costs)
    path = tmp_path_factory.mktemp("res") / f"r{suffix}"
    result.save(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    back = load_result(path)
    assert_same_result(result, back)
    if suffix == ".json" and len(result):
        # readable without this package: plain JSON with null for disabled positions
        doc = json.loads(path.read_text())
        assert doc["format"] == "dyce-search-result" and doc["version"] == 2
        entry = doc["configurations"][0]
        config = result.configs[0]
        assert entry["lambda"] == result.table["lambda"][0]
        assert entry["exit_types"] == config.exit_types.tolist()
        assert entry["thresholds"] == [None if k < 0 else t for k, t in zip(config.exit_types, config.thresholds)]
        assert set(entry["metrics"]) >= {"rel_cost", "rel_accuracy", "accuracy", "cost", "seconds"}


def test_extra_columns_and_nan_survive_files(tmp_path):
    cache = random_cache(np.random.default_rng(3), P=3, K=2, M=10)
    result = SearchResult.from_configs(
        cache,
        [Config.empty(cache.n_positions)] * 2,
        [0.0, 1.0],
        method="iterative",
        threshold="bounded",
        seconds=[1.0, float("nan")],
        extra={"rounds": [3, 4]},
    )
    for name in ("a.json", "a.parquet"):
        result.save(tmp_path / name)
        back = load_result(tmp_path / name)
        assert_same_result(result, back)
        assert back.table["rounds"].tolist() == [3, 4]


@SETTINGS
@given(data=st.data())
def test_pareto_matches_brute_force(data):
    _, result = _result(data)
    table = result.table
    accuracy = table["accuracy"] if table["rel_accuracy"].isna().any() else table["rel_accuracy"]
    expected = naive.pareto_rows(table["rel_cost"].tolist(), accuracy.tolist())
    front = result.pareto()
    assert isinstance(front, SearchResult)
    assert front.table["lambda"].tolist() == [table["lambda"][i] for i in expected]
    assert front.configs == [result.configs[i] for i in expected]
    assert front.metadata == result.metadata
    assert front.table["rel_cost"].is_monotonic_increasing


def test_pareto_on_hand_made_points():
    configs = [Config.empty(1)] * 6
    table = pd.DataFrame(
        {
            "lambda": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
            "method": "m",
            "objective": "paper",
            "threshold": "exact",
            "rel_cost": [0.5, 0.3, 0.3, 0.9, 0.5, 0.2],
            "rel_accuracy": [0.9, 0.8, 0.85, 0.9, 0.9, 0.5],
            "accuracy": 0.0,
            "cost": 0.0,
            "seconds": 0.0,
        }
    )
    front = SearchResult(table, configs, {}).pareto()
    # 0.2/0.5, 0.3/0.85 (beats 0.3/0.8), 0.5/0.9 (first of two identical), not 0.9/0.9
    assert front.table["lambda"].tolist() == [0.5, 0.2, 0.0]


def test_config_by_index_and_lambda():
    cache = random_cache(np.random.default_rng(1), P=2, K=2, M=10)
    cfgs = [Config.empty(cache.n_positions), Config.empty(cache.n_positions)]
    if cache.available[0].any():
        cfgs[1] = Config(
            np.r_[int(np.flatnonzero(cache.available[0])[0]), -np.ones(cache.n_positions - 1, np.int64)],
            np.r_[0.3, np.full(cache.n_positions - 1, np.nan)],
        )
    result = SearchResult.from_configs(cache, cfgs, [0.1, 0.7], method="single_pass", threshold="exact")
    assert result.config(1) == cfgs[1]
    assert result.config(lam=0.7) == cfgs[1]
    assert result.config(lam=0.7 + 5e-10) == cfgs[1]
    with pytest.raises(ResultError, match=r"no configuration for lambda=0.7001; stored lambdas: 0.1, 0.7"):
        result.config(lam=0.7001)
    with pytest.raises(ValueError, match="give index or lam"):
        result.config()
    with pytest.raises(ValueError, match="not both"):
        result.config(0, lam=0.1)
    one = result.take([0])
    assert len(one) == 1 and one.config() == cfgs[0]


def _renamed(cache, **changes):
    fields = {
        name: getattr(cache, name)
        for name in (
            "label",
            "pred",
            "conf",
            "final_pred",
            "final_conf",
            "backbone_macs",
            "exit_macs",
            "available",
            "total_macs",
            "positions",
            "exit_types",
            "sample",
            "num_classes",
        )
    }
    fields.update(changes)
    fields["metadata"] = {k: cache.metadata.get(k) for k in ("backbone", "weights", "dataset", "split", "synthetic")}
    return ExitCache(**fields)


@SETTINGS
@given(data=st.data())
def test_evaluate_on_another_cache(data):
    cache, result = _result(data, n_rows=3)
    # the same cache gives back the same metrics
    again = result.evaluate(cache)
    pd.testing.assert_frame_equal(again, result.table)
    # another split: the exits' outputs shifted by one sample against the labels and the head
    other = _renamed(
        cache,
        conf=np.ascontiguousarray(np.roll(cache.conf, 1, axis=2)),
        pred=np.ascontiguousarray(np.roll(cache.pred, 1, axis=2)),
    )
    table = result.evaluate(other)
    for i, config in enumerate(result.configs):
        lam = table["lambda"][i]
        try:
            ev = evaluate(other, config, lam=lam)
        except ValueError:  # A_ori = 0 on this split: f and A undefined
            ev = evaluate(other, config)
        np.testing.assert_array_equal(
            table.loc[i, ["rel_accuracy", "rel_cost", "accuracy", "cost", "f"]].to_numpy(float),
            [ev.rel_accuracy, ev.rel_cost, ev.accuracy, ev.cost, np.nan if ev.objective is None else ev.objective],
        )
        assert table["exits"][i] == ev.exits.tolist()
    assert table["lambda"].tolist() == result.table["lambda"].tolist()


def test_evaluate_refuses_mismatched_caches():
    cache = random_cache(np.random.default_rng(2), P=3, K=2, M=10)
    result = SearchResult.from_configs(
        cache, [Config.empty(cache.n_positions)], [0.5], method="single_pass", threshold="exact"
    )
    moved = _renamed(cache, positions=tuple("q" + p for p in cache.positions))
    with pytest.raises(ResultError, match="positions differ: 'pos0' in the result vs 'qpos0' in the cache at index 0"):
        result.evaluate(moved)
    retyped = _renamed(cache, exit_types=tuple("x" + t for t in cache.exit_types))
    with pytest.raises(ResultError, match="exit types differ"):
        result.evaluate(retyped)
    more = _renamed(cache, num_classes=cache.num_classes + 3)
    with pytest.raises(ResultError, match="number of classes differs"):
        result.evaluate(more)


def test_evaluate_uses_the_stored_cost_profile():
    rng = np.random.default_rng(5)
    cache = random_cache(rng, P=4, K=2, M=30)
    costs = random_cost_profile(rng, cache)
    config = random_config(rng, cache, p_enable=1.0)
    result = SearchResult.from_configs(cache, [config], [0.5], method="single_pass", threshold="exact", costs=costs)
    assert result.metadata["cost_unit"] == "ms"
    table = result.evaluate(cache)
    assert table["cost"][0] == evaluate(cache, config, costs).cost
    with pytest.raises(ResultError, match="searched in cost unit 'ms'; evaluating it in 'macs'"):
        result.evaluate(cache, Costs.from_cache(cache))
    macs = result.evaluate(cache, Costs.from_cache(cache), allow_mixed=True)
    assert macs["cost"][0] == evaluate(cache, config).cost


def test_constructor_validation():
    base = pd.DataFrame(
        {c: [0.0] for c in ("lambda", "rel_cost", "rel_accuracy", "accuracy", "cost", "seconds")}
        | {"method": ["m"], "objective": ["paper"], "threshold": ["exact"]}
    )
    cfg = Config.empty(2)
    with pytest.raises(ResultError, match=r"lacks the column\(s\) \['rel_cost'\]"):
        SearchResult(base.drop(columns="rel_cost"), [cfg], {})
    with pytest.raises(ResultError, match="1 rows but there are 2"):
        SearchResult(base, [cfg, cfg], {})
    with pytest.raises(ResultError, match="column 'exit_types'"):
        SearchResult(base.assign(exit_types=[[0, -1]]), [cfg], {})
    with pytest.raises(ResultError, match="list of dyce_search.Config"):
        SearchResult(base, ["x"], {})
    ok = SearchResult(base.assign(thresholds=[[np.nan, np.nan]]), [cfg], {"method": "m"})
    assert ok.table["n_exits"].tolist() == [0]


def test_save_refuses_unknown_extension_and_is_atomic(tmp_path, monkeypatch):
    cache = random_cache(np.random.default_rng(3), P=3, K=2, M=10)
    result = SearchResult.from_configs(
        cache, [Config.empty(cache.n_positions)], [0.5], method="single_pass", threshold="exact"
    )
    with pytest.raises(ValueError, match="unknown result file extension '.csv'"):
        result.save(tmp_path / "r.csv")
    result.save(tmp_path / "r.json")
    before = (tmp_path / "r.json").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        result.take([]).save(tmp_path / "r.json")
    assert (tmp_path / "r.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def _valid_doc():
    return {
        "format": "dyce-search-result",
        "version": 2,
        "metadata": {"method": "single_pass"},
        "configurations": [
            {
                "lambda": 0.5,
                "method": "single_pass",
                "objective": "paper",
                "threshold": "exact",
                "exit_types": [0, -1],
                "thresholds": [0.25, None],
                "metrics": {"rel_cost": 0.5, "rel_accuracy": 0.9, "accuracy": 0.8, "cost": 10.0, "seconds": 0.1},
            }
        ],
    }


def _broken(path_fn):
    doc = _valid_doc()
    path_fn(doc)
    return doc


@pytest.mark.parametrize(
    "doc, match",
    [
        ("{", "neither Parquet nor valid JSON"),
        ([], "expected a JSON object"),
        (_broken(lambda d: d.update(format="x")), "field 'format' must be 'dyce-search-result'"),
        (_broken(lambda d: d.update(version=3)), "unsupported 'version' 3"),
        (_broken(lambda d: d.pop("metadata")), "field 'metadata' must be an object"),
        (_broken(lambda d: d.update(configurations={})), "field 'configurations' must be a list"),
        (_broken(lambda d: d["configurations"][0].pop("lambda")), r"configurations\[0\] lacks field 'lambda'"),
        (_broken(lambda d: d["configurations"][0].update(thresholds=["a", None])), r"configurations\[0\]: field 'thresholds'"),
        (_broken(lambda d: d["configurations"][0].update(exit_types=[0.5, -1])), r"configurations\[0\]: field 'exit_types'"),
        (_broken(lambda d: d["configurations"][0].update(thresholds=[0.5])), "'exit_types' has 2 entries but 'thresholds' has 1"),
        (_broken(lambda d: d["configurations"][0].update(thresholds=[None, None])), "every enabled position needs a threshold"),
        (_broken(lambda d: d["configurations"][0]["metrics"].pop("rel_cost")), r"lacks field\(s\) \['rel_cost'\]"),
        (_broken(lambda d: d["configurations"][0]["metrics"].update(accuracy="high")), "field 'accuracy' must hold numbers"),
        (_broken(lambda d: d["configurations"][0].update(method=3)), "field 'method' must hold strings"),
        (_broken(lambda d: d["configurations"][0].update(metrics=[])), r"configurations\[0\].metrics must be an object"),
    ],
)
def test_load_malformed_json_names_file_and_field(tmp_path, doc, match):
    path = tmp_path / "bad.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ResultError, match=match) as info:
        load_result(path)
    assert str(path) in str(info.value)


def test_load_valid_hand_written_json(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_valid_doc()))
    result = load_result(path)
    assert result.config(lam=0.5) == Config(np.array([0, -1]), np.array([0.25, np.nan]))
    assert result.table["f"].isna().all()


def test_load_malformed_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"lambda": [0.5]}), path)
    with pytest.raises(ResultError, match="lacks the 'dyce-search-result' schema metadata"):
        load_result(path)
    truncated = tmp_path / "cut.parquet"
    truncated.write_bytes(b"PAR1" + b"\0" * 20)
    with pytest.raises(ResultError, match="not a readable Parquet file"):
        load_result(truncated)
    with pytest.raises(OSError):
        load_result(tmp_path / "missing.json")
