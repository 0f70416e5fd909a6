"""load_result checks every configuration as evaluate would: lambda, positions, exit types, thresholds."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest

from dyce_search import ResultError
from dyce_search.config import Config
from dyce_search.result import SearchResult, load_result

METADATA = {"method": "hand", "positions": ["s1", "s2", "s3"], "exit_types": ["mlp1", "mlp2"], "num_classes": 4}


def _doc():
    def entry(lam, k, t):
        return {
            "lambda": lam, "method": "hand", "objective": "paper", "threshold": "exact", "exit_types": k,
            "thresholds": t, "metrics": {"rel_cost": 0.5, "rel_accuracy": 0.9, "accuracy": 0.8, "cost": 1.0,
                                         "seconds": 0.0},
        }

    return {
        "format": "dyce-search-result", "version": 2, "metadata": dict(METADATA),
        "configurations": [entry(0.0, [-1, -1, -1], [None] * 3), entry(0.5, [0, -1, 1], [0.25, None, 0.75]),
                           entry(None, [1, 1, 1], [0.5, 0.5, 0.5])],
    }


def _edit(row, **fields):
    doc = _doc()
    doc["configurations"][row].update(fields)
    return doc


BAD = [
    # (document, row, field, what the message says)
    (_edit(1, **{"lambda": 1.5}), 1, "lambda", "must be in [0, 1] or null, got 1.5"),
    (_edit(2, **{"lambda": -0.25}), 2, "lambda", "must be in [0, 1] or null, got -0.25"),
    (_edit(1, thresholds=[0.25, None, float("nan")]), 1, "thresholds", "position 2 ('s3') has nan"),
    (_edit(2, thresholds=[0.5, float("inf"), 0.5]), 2, "thresholds", "position 1 ('s2') has inf"),
    (_edit(2, thresholds=[0.5, float("-inf"), 0.5]), 2, "thresholds", "position 1 ('s2') has -inf"),
    (_edit(1, thresholds=[None, None, 0.75]), 1, "thresholds", "position 0 ('s1') has null"),
    (_edit(1, exit_types=[2, -1, 1]), 1, "exit_types", "holds 2 at position 0 ('s1'); allowed: -1 (none) to 1"),
    (_edit(2, exit_types=[1, -3, 1]), 2, "exit_types", "holds -3 at position 1 ('s2')"),
    (_edit(0, exit_types=[-1, -1], thresholds=[None, None]), 0, "exit_types",
     "has 2 positions, the metadata lists 3 (s1, s2, s3)"),
    (_edit(1, exit_types=[0, -1, 1, 0], thresholds=[0.25, None, 0.75, 0.5]), 1, "exit_types",
     "has 4 positions, the metadata lists 3"),
]


@pytest.mark.parametrize("doc, row, field, says", BAD)
def test_malformed_configuration_in_json_names_file_row_and_field(tmp_path, doc, row, field, says):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))  # NaN / Infinity as Python's json writes them
    expected = f"{path}: configurations[{row}]: field '{field}'"
    with pytest.raises(ResultError, match=re.escape(expected) + ".*" + re.escape(says)):
        load_result(path)


@pytest.mark.parametrize("doc, row, field, says", BAD)
def test_malformed_configuration_in_parquet_names_file_row_and_field(tmp_path, doc, row, field, says):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = doc["configurations"]
    columns = {
        "lambda": pa.array([r["lambda"] for r in rows], pa.float64()),
        **{key: [r[key] for r in rows] for key in ("method", "objective", "threshold")},
        **{key: pa.array([r["metrics"][key] for r in rows], pa.float64()) for key in rows[0]["metrics"]},
        "exit_types": pa.array([r["exit_types"] for r in rows], pa.list_(pa.int64())),
        "thresholds": pa.array([r["thresholds"] for r in rows], pa.list_(pa.float64())),
    }
    header = {"format": doc["format"], "version": doc["version"], "metadata": doc["metadata"]}
    table = pa.table(columns).replace_schema_metadata({b"dyce-search-result": json.dumps(header).encode()})
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    expected = f"{path}: row {row}: field '{field}'"
    with pytest.raises(ResultError, match=re.escape(expected) + ".*" + re.escape(says)):
        load_result(path)


def test_valid_document_loads_with_null_lambda_and_null_thresholds_where_disabled(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_doc()))
    result = load_result(path)
    assert len(result) == 3 and np.isnan(result.lambdas[2])
    assert result.configs[1] == Config(np.array([0, -1, 1]), np.array([0.25, np.nan, 0.75]))
    # thresholds outside [0, 1] are finite, hence valid (t > 1: nobody leaves; t <= 0: everybody)
    doc = _edit(1, thresholds=[-2.0, None, 7.5])
    path.write_text(json.dumps(doc))
    assert load_result(path).configs[1].thresholds[2] == 7.5
    # without positions / exit types in the metadata only what the rows themselves say is checked
    doc = copy.deepcopy(_doc())
    doc["metadata"] = {"method": "hand"}
    doc["configurations"][1]["exit_types"] = [5, -1, 1]
    path.write_text(json.dumps(doc))
    assert load_result(path).configs[1].exit_types[0] == 5


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_saved_result_with_a_bad_row_does_not_load_back(tmp_path, suffix):
    """What the constructor accepts in memory is refused when read from a file, in both formats."""
    table = pd.DataFrame({"lambda": [0.25, 1.5], "method": "hand", "objective": "paper", "threshold": "exact",
                          "rel_cost": 0.5, "rel_accuracy": 0.9, "accuracy": 0.8, "cost": 1.0, "seconds": 0.0})
    configs = [Config(np.array([0, -1, -1]), np.array([0.5, np.nan, np.nan])), Config.empty(3)]
    path = tmp_path / f"r{suffix}"
    SearchResult(table, configs, dict(METADATA)).save(path)
    row = "configurations[1]" if suffix == ".json" else "row 1"
    with pytest.raises(ResultError, match=re.escape(f"{path}: {row}: field 'lambda' must be in [0, 1] or null")):
        load_result(path)
