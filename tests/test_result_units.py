"""Cost units in results: generic cost columns, the unit column, version-1 files, display names."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dyce_search import Costs, ResultError, cheapest, run, select, split
from dyce_search.cli import summary_table
from dyce_search.evaluation import evaluate
from dyce_search.result import VERSION, SearchResult, load_result
from dyce_search.units import UNITS, unit
from dyce_search.config import Config

from tests.strategies import random_cache, random_cost_profile

OLD = ("rel_macs", "macs", "validation_rel_macs")


def _ms_setup(seed=5):
    rng = np.random.default_rng(seed)
    cache = random_cache(rng, P=4, K=2, M=60)
    return cache, random_cost_profile(rng, cache), rng


def _assert_no_old_names(table):
    assert not set(OLD) & set(table.columns), list(table.columns)


def test_search_in_ms_names_columns_for_cost_and_records_the_unit():
    cache, costs, _ = _ms_setup()
    assert costs.unit == "ms"
    result = run(cache, [0.2, 0.6], method="single_pass", costs=costs, progress=False)
    t = result.table
    _assert_no_old_names(t)
    assert {"rel_cost", "cost", "unit"} <= set(t.columns)
    assert list(t.columns[:9]) == ["lambda", "method", "objective", "threshold", "rel_cost", "rel_accuracy",
                                   "accuracy", "cost", "unit"]
    assert (t["unit"] == "ms").all() and result.metadata["cost_unit"] == "ms"
    for row, config in zip(t.itertuples(), result.configs):
        ev = evaluate(cache, config, costs)
        assert row.rel_cost == ev.rel_cost and row.cost == ev.cost
    # C (Eq. 11) is the cost over the original model's, both in ms
    assert np.allclose(t["cost"], t["rel_cost"] * costs.total, rtol=1e-12)


def test_macs_stay_the_default_unit():
    cache, _, _ = _ms_setup()
    t = run(cache, [0.5], method="single_pass", progress=False).table
    _assert_no_old_names(t)
    assert t["unit"].tolist() == ["macs"]


def test_evaluate_and_targets_and_select_use_the_new_names():
    cache, costs, _ = _ms_setup(7)
    search, validation = split(cache, (0.5, 0.5), seed=0, names=("search", "validation"))
    found = cheapest(search, [0.05, 0.5], lambdas=[0.0, 0.5, 1.0], costs=costs.check(search), progress=False)
    _assert_no_old_names(found.table)
    assert (found.table["unit"] == "ms").all()
    measured = found.evaluate(validation)
    _assert_no_old_names(measured)
    assert (measured["unit"] == "ms").all()
    chosen = select(found, validation, [0.5], delta=0.2, risk="agreement")
    _assert_no_old_names(chosen.table)
    assert "validation_rel_cost" in chosen.table and (chosen.table["unit"] == "ms").all()
    summary = summary_table(chosen, measured.iloc[: len(chosen)])
    assert "val_rel_cost" in summary and "test_rel_cost" in summary
    assert not any("macs" in c for c in summary.columns)


def test_unit_column_must_agree_with_the_metadata():
    base = pd.DataFrame({c: [0.0] for c in ("lambda", "rel_cost", "rel_accuracy", "accuracy", "cost", "seconds")}
                        | {"method": ["m"], "objective": ["paper"], "threshold": ["exact"]})
    cfg = Config.empty(2)
    assert SearchResult(base, [cfg], {"cost_unit": "ms"}).table["unit"].tolist() == ["ms"]
    assert SearchResult(base, [cfg], {}).table["unit"].tolist() == ["macs"]
    with pytest.raises(ResultError, match="row 0: column 'unit' is 'macs' but metadata 'cost_unit' is 'ms'"):
        SearchResult(base.assign(unit=["macs"]), [cfg], {"cost_unit": "ms"})


@pytest.mark.parametrize("ext", [".json", ".parquet"])
def test_saved_files_are_version_2_and_round_trip_the_unit(tmp_path, ext):
    cache, costs, _ = _ms_setup()
    result = run(cache, [0.3], method="single_pass", costs=costs, progress=False)
    path = tmp_path / f"r{ext}"
    result.save(path)
    back = load_result(path)
    assert VERSION == 2
    pd.testing.assert_frame_equal(back.table, result.table)
    if ext == ".json":
        doc = json.loads(path.read_text())
        assert doc["version"] == 2 and doc["metadata"]["cost_unit"] == "ms"
        metrics = doc["configurations"][0]["metrics"]
        assert {"rel_cost", "cost"} <= set(metrics) and not set(OLD) & set(metrics)
        assert "unit" not in metrics  # one unit per result: the metadata's cost_unit


def _v1_document(cost_unit="ms"):
    metadata = {"method": "select", "positions": ["a", "b"], "exit_types": ["t"], "num_classes": 3}
    if cost_unit is not None:
        metadata["cost_unit"] = cost_unit
    return {
        "format": "dyce-search-result",
        "version": 1,
        "metadata": metadata,
        "configurations": [{
            "lambda": None, "method": "select", "objective": "paper", "threshold": "exact",
            "exit_types": [0, -1], "thresholds": [0.5, None],
            "metrics": {"rel_macs": 0.4, "rel_accuracy": 0.97, "accuracy": 0.8, "macs": 12.5, "seconds": None,
                        "target": 0.05, "certified": True, "validation_rel_macs": 0.45,
                        "validation_rel_accuracy": 0.96},
        }],
    }


def test_version_1_json_reads_with_the_new_names(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_v1_document()))
    t = load_result(path).table
    _assert_no_old_names(t)
    assert t["rel_cost"].tolist() == [0.4] and t["cost"].tolist() == [12.5]
    assert t["validation_rel_cost"].tolist() == [0.45] and t["unit"].tolist() == ["ms"]
    assert load_result(path).choose(max_drop=0.05)[0] == 0


def test_version_1_without_cost_unit_is_in_macs(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_v1_document(cost_unit=None)))
    assert load_result(path).table["unit"].tolist() == ["macs"]


def test_version_1_parquet_reads_with_the_new_names(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    doc = _v1_document()
    header = {"format": doc["format"], "version": 1, "metadata": doc["metadata"]}
    table = pa.table({
        "lambda": pa.array([0.5]), "method": ["descent"], "objective": ["paper"], "threshold": ["exact"],
        "rel_macs": [0.4], "rel_accuracy": [0.97], "accuracy": [0.8], "macs": [12.5], "f": [0.1],
        "n_exits": [1], "exits": pa.array([[3, 0, 7]], pa.list_(pa.int64())),
        "exit_types": pa.array([[0, -1]], pa.list_(pa.int64())),
        "thresholds": pa.array([[0.5, float("nan")]], pa.list_(pa.float64())), "seconds": [0.0],
    }).replace_schema_metadata({b"dyce-search-result": json.dumps(header).encode()})
    path = tmp_path / "old.parquet"
    pq.write_table(table, path)
    t = load_result(path).table
    _assert_no_old_names(t)
    assert t["rel_cost"].tolist() == [0.4] and t["cost"].tolist() == [12.5] and t["unit"].tolist() == ["ms"]


def test_a_version_1_file_with_both_names_is_refused(tmp_path):
    doc = _v1_document()
    doc["configurations"][0]["metrics"]["rel_cost"] = 0.4
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultError, match=r"odd.json: a version-1 file with both old and new column names \['rel_cost'\]"):
        load_result(path)


@pytest.mark.parametrize("version", [0, 3, True])
def test_other_versions_are_refused(tmp_path, version):
    doc = _v1_document()
    doc["version"] = version
    path = tmp_path / "v.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultError, match=r"unsupported 'version' .* \(this reader knows 1 and 2\)"):
        load_result(path)


def test_unit_display_names():
    assert unit("macs").label == "MACs" and unit("macs").relative == "relative MACs"
    assert unit("ms").label == "latency (ms)" and unit("ms").relative == "relative latency"
    assert unit("macs").scaled(4.1e9) == (1e9, "GMACs per sample")
    assert unit("macs").scaled(500) == (1.0, "MACs per sample")
    assert unit("ms").scaled(4.1e9) == (1.0, "latency per sample (ms)")
    other = unit("joule{x}")
    assert other.label == "cost (joule{x})" and "MACs" not in other.relative
    assert other.scaled(1e12) == (1.0, "cost per sample (joule{x})")
    assert set(UNITS) == {"macs", "ms"}
    with pytest.raises(ValueError, match="non-empty string, got ''"):
        unit("")
