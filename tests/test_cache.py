"""ExitCache: construction checks, Parquet round trip, bad files, atomic writes, subsets."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dyce_search import CacheError, ExitCache

FIXED = ["sample", "label", "final.pred", "final.conf"]


def make_arrays(P=3, K=2, M=40, C=10, seed=0, available=None, unknown_labels=0):
    """Keyword arguments for a valid ExitCache with random content."""
    rng = np.random.default_rng(seed)
    if available is None:
        available = np.ones((P, K), dtype=bool)
        if P * K > 1:
            available[0, K - 1] = False
    available = np.asarray(available, dtype=bool)
    label = rng.integers(0, C, M).astype(np.int32)
    label[rng.permutation(M)[:unknown_labels]] = -1
    pred = rng.integers(0, C, (P, K, M)).astype(np.int32)
    conf = rng.random((P, K, M), dtype=np.float32)
    pred[~available] = -1
    conf[~available] = np.nan
    exit_macs = rng.integers(1, 1000, (P, K)).astype(np.int64)
    exit_macs[~available] = 0
    return dict(
        label=label,
        pred=pred,
        conf=conf,
        final_pred=rng.integers(0, C, M).astype(np.int32),
        final_conf=rng.random(M, dtype=np.float32),
        backbone_macs=np.cumsum(rng.integers(1, 1000, P)).astype(np.int64),
        exit_macs=exit_macs,
        available=available,
        total_macs=int(1000 * P + 1),
        positions=tuple(f"layer{p // 2 + 1}.{p % 2}" for p in range(P)),
        exit_types=tuple(f"mlp{k}" for k in range(K)),
        sample=np.arange(100, 100 + M, dtype=np.int64),
        num_classes=C,
        metadata={
            "backbone": "toy",
            "weights": "random",
            "dataset": "digits",
            "split": "val",
            "positions": [
                {"name": f"layer{p // 2 + 1}.{p % 2}", "channels": 8 * (p + 1), "reduction": 2} for p in range(P)
            ],
            "exit_types": [{"name": f"mlp{k}", "hidden": [5] * k} for k in range(K)],
            "note": {"free": ["form", 1]},
        },
    )


@pytest.fixture
def cache():
    return ExitCache(**make_arrays())


@pytest.fixture
def path(tmp_path, cache):
    return cache.write(tmp_path / "cache.parquet")


# ---------------------------------------------------------------- construction


def test_constructor_coerces_dtypes_and_fills_metadata():
    kw = make_arrays()
    kw["label"] = kw["label"].astype(np.int64)
    kw["pred"] = np.asfortranarray(kw["pred"].astype(np.int64))
    kw["conf"] = kw["conf"].astype(np.float64)
    kw["available"] = kw["available"].astype(np.int8)
    kw["positions"] = list(kw["positions"])
    c = ExitCache(**kw)
    assert c.label.dtype == np.int32 and c.pred.dtype == np.int32 and c.pred.flags.c_contiguous
    assert c.conf.dtype == np.float32 and c.available.dtype == np.bool_
    assert c.sample.dtype == np.int64 and c.backbone_macs.dtype == np.int64 and c.exit_macs.dtype == np.int64
    assert isinstance(c.positions, tuple) and isinstance(c.total_macs, int)
    md = c.metadata
    assert md["format"] == "dyce-exit-cache" and md["version"] == 1 and md["synthetic"] is False
    assert md["num_classes"] == 10 and md["total_macs"] == c.total_macs
    assert [p["name"] for p in md["positions"]] == list(c.positions)
    assert [p["backbone_macs"] for p in md["positions"]] == c.backbone_macs.tolist()
    assert md["positions"][1]["channels"] == 16
    assert md["exit_types"][1] == {"name": "mlp1", "hidden": [5]}
    assert md["exit_macs"][0][1] is None and md["exit_macs"][1][1] == int(c.exit_macs[1, 1])
    assert md["note"] == {"free": ["form", 1]}


def test_constructor_normalises_absent_exits_without_mutating_input():
    kw = make_arrays()
    kw["pred"][0, 1] = 7
    kw["conf"][0, 1] = 0.5
    kw["exit_macs"][0, 1] = 99
    before = kw["pred"].copy()
    c = ExitCache(**kw)
    assert (c.pred[0, 1] == -1).all() and np.isnan(c.conf[0, 1]).all() and c.exit_macs[0, 1] == 0
    np.testing.assert_array_equal(kw["pred"], before)


def test_constructor_does_not_copy_conforming_arrays():
    kw = make_arrays()
    c = ExitCache(**kw)
    assert c.pred is kw["pred"] and c.conf is kw["conf"] and c.label is kw["label"]


def _bad(**changes):
    kw = make_arrays()
    for key, fn in changes.items():
        kw[key] = fn(kw[key]) if callable(fn) else fn
    return kw


def _set(index, value):
    def fn(a):
        a = a.copy()
        a[index] = value
        return a

    return fn


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"conf": lambda a: a[:, :, :-1]}, r"conf has shape"),
        ({"label": lambda a: a[:-1]}, r"label has shape"),
        ({"final_conf": lambda a: a[:, None]}, r"final_conf has shape"),
        ({"exit_macs": lambda a: a[:-1]}, r"exit_macs has shape"),
        ({"available": lambda a: a.T}, r"available has shape"),
        ({"pred": lambda a: a[0]}, r"pred must be 3-D"),
        ({"conf": _set((1, 0, 3), np.nan)}, r"'p1\.mlp0\.conf'.*nan.*row 3 \(sample 103\)"),
        ({"conf": _set((2, 1, 0), np.inf)}, r"'p2\.mlp1\.conf'.*inf"),
        ({"conf": _set((1, 1, 5), 1.5)}, r"'p1\.mlp1\.conf'.*1\.5.*row 5"),
        ({"conf": _set((1, 1, 5), -0.01)}, r"'p1\.mlp1\.conf'"),
        ({"final_conf": _set(2, 1.01)}, r"'final\.conf'.*row 2"),
        ({"label": _set(4, 10)}, r"'label'.*label 10 at row 4 .*\[-1, 10\)"),
        ({"label": _set(4, -2)}, r"'label'.*-2"),
        ({"pred": _set((2, 0, 1), -3)}, r"'p2\.mlp0\.pred'.*prediction -3 at row 1"),
        ({"pred": _set((2, 0, 1), 10)}, r"'p2\.mlp0\.pred'.*10"),
        ({"final_pred": _set(0, -1)}, r"'final\.pred'.*-1"),
        ({"backbone_macs": lambda a: np.array([5, 5, 9])}, r"strictly increasing.*position 1 \('layer1\.1'\)"),
        ({"backbone_macs": lambda a: np.array([5, 4, 9])}, r"strictly increasing"),
        ({"backbone_macs": lambda a: np.array([0, 4, 9])}, r"position 0.*positive"),
        ({"backbone_macs": lambda a: np.array([1, 2, 3001])}, r"below total_macs"),
        ({"exit_macs": _set((2, 1), -5)}, r"exit_macs of exit type 'mlp1' at position 2.*-5"),
        ({"total_macs": 0}, r"total_macs must be positive"),
        ({"total_macs": 1.5e9}, r"total_macs must be an integer"),
        ({"num_classes": 0}, r"num_classes must be >= 1"),
        ({"num_classes": True}, r"num_classes must be an integer"),
        (
            {
                "label": lambda a: a[:0],
                "sample": lambda a: a[:0],
                "final_pred": lambda a: a[:0],
                "final_conf": lambda a: a[:0],
                "pred": lambda a: a[:, :, :0],
                "conf": lambda a: a[:, :, :0],
            },
            r"zero samples",
        ),
        ({"positions": ("a", "a", "b")}, r"positions has the duplicate name 'a'"),
        ({"exit_types": ("x", "x")}, r"exit_types has the duplicate name 'x'"),
        ({"positions": ("a", "b")}, r"positions has 2 names but the arrays have 3"),
        ({"positions": "abc"}, r"sequence of 3 strings"),
        ({"exit_types": ("x", "")}, r"non-empty strings"),
        ({"label": lambda a: a.astype(np.float64)}, r"label must hold integers"),
        ({"conf": lambda a: (a > 0.5).astype(np.int32)}, r"conf must hold floating"),
        ({"pred": lambda a: a.astype(np.int64) + 2**32}, r"pred has value .* does not fit int32"),
        ({"available": lambda a: a.astype(np.int32) * 2}, r"available must be boolean"),
        ({"metadata": {"positions": [{"name": "z"}, {}, {}]}}, r"entry 'z' does not match the name 'layer1\.0'"),
        ({"metadata": {"backbone": 3}}, r"metadata 'backbone' must be a string"),
        ({"metadata": {"synthetic": "yes"}}, r"'synthetic' must be a bool"),
        ({"metadata": {"x": float("nan")}}, r"not JSON-serialisable"),
        ({"metadata": {"x": object()}}, r"not JSON-serialisable"),
    ],
)
def test_constructor_rejects(changes, match):
    with pytest.raises(CacheError, match=match):
        ExitCache(**_bad(**changes))


@settings(max_examples=60, deadline=None)
@given(
    where=st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 39)),
    value=st.sampled_from([np.nan, np.inf, -np.inf, -1e-6, 1.0001, 2.0, -1.0]),
)
def test_any_bad_confidence_is_found(where, value):
    kw = make_arrays()
    p, k, i = where
    kw["conf"][p, k, i] = value
    if not kw["available"][p, k]:
        assert np.isnan(ExitCache(**kw).conf[p, k]).all()
        return
    with pytest.raises(CacheError, match=rf"column 'p{p}\.mlp{k}\.conf': confidence .* at row {i} "):
        ExitCache(**kw)


@settings(max_examples=60, deadline=None)
@given(
    where=st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 39)),
    value=st.sampled_from([-1, -2, 10, 11, 2**31 - 1]),
)
def test_any_bad_prediction_is_found(where, value):
    kw = make_arrays()
    p, k, i = where
    kw["pred"][p, k, i] = value
    if not kw["available"][p, k]:
        ExitCache(**kw)
        return
    with pytest.raises(CacheError, match=rf"column 'p{p}\.mlp{k}\.pred': prediction {value} at row {i} "):
        ExitCache(**kw)


def test_values_of_absent_exits_are_not_checked():
    kw = make_arrays()
    kw["conf"][0, 1] = 7.0  # absent: normalised, not an error
    kw["pred"][0, 1] = -99
    ExitCache(**kw)


def test_names_from_numpy_arrays_become_plain_strings():
    kw = make_arrays()
    kw["positions"] = np.array(kw["positions"])
    c = ExitCache(**kw)
    assert all(type(name) is str for name in c.positions)


def test_metadata_accepts_numpy_scalars_and_plain_names():
    kw = make_arrays()
    kw["metadata"] = {"positions": list(kw["positions"]), "exit_types": list(kw["exit_types"]), "seed": np.int64(3)}
    c = ExitCache(**kw)
    assert c.metadata["seed"] == 3 and type(c.metadata["seed"]) is int
    assert c.metadata["exit_types"] == [{"name": "mlp0"}, {"name": "mlp1"}]


# ------------------------------------------------------------------ round trip


def test_round_trip(cache, path):
    back = ExitCache.read(path)
    assert back.equals(cache)
    assert back.metadata == cache.metadata
    np.testing.assert_array_equal(back.conf, cache.conf)  # NaN in the same places
    assert not os.path.exists(str(path) + ".tmp")
    assert [p.name for p in path.parent.iterdir()] == ["cache.parquet"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    P=st.integers(1, 4),
    K=st.integers(1, 3),
    M=st.integers(1, 30),
    C=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_round_trip_property(tmp_path, P, K, M, C, seed, data):
    available = np.array(data.draw(st.lists(st.booleans(), min_size=P * K, max_size=P * K)), dtype=bool).reshape(P, K)
    kw = make_arrays(P, K, M, C, seed, available=available, unknown_labels=data.draw(st.integers(0, M)))
    # ties, exact 0 and 1 are legal confidences
    kw["conf"][available] = np.round(kw["conf"][available] * 4) / 4
    c = ExitCache(**kw)
    back = ExitCache.read(c.write(tmp_path / f"rt-{P}-{K}-{M}.parquet"))
    assert back.equals(c)


def test_write_overwrites_and_returns_path(tmp_path, cache):
    target = tmp_path / "c.parquet"
    assert cache.write(str(target)) == target
    smaller = cache.take(np.arange(5))
    smaller.write(target)
    assert ExitCache.read(target).n_samples == 5


def test_written_file_has_default_permissions(tmp_path, cache):
    # a temp file made with 0600 must not leak its mode into the final file
    target = cache.write(tmp_path / "c.parquet")
    probe = tmp_path / "probe"
    probe.touch()
    assert (target.stat().st_mode & 0o777) == (probe.stat().st_mode & 0o777)


def test_plain_pyarrow_and_pandas_read_documented_columns(cache, path):
    table = pq.read_table(path)
    expected = list(FIXED)
    for p in range(3):
        for k in range(2):
            if cache.available[p, k]:
                expected += [f"p{p}.mlp{k}.pred", f"p{p}.mlp{k}.conf"]
    assert table.column_names == expected
    types = {f.name: f.type for f in table.schema}
    assert types["sample"] == pa.int64() and types["label"] == pa.int32()
    assert types["final.pred"] == pa.int32() and types["final.conf"] == pa.float32()
    assert types["p1.mlp1.pred"] == pa.int32() and types["p1.mlp1.conf"] == pa.float32()
    md = json.loads(table.schema.metadata[b"dyce"])
    assert md["format"] == "dyce-exit-cache" and md["version"] == 1 and md["backbone"] == "toy"
    assert md["exit_macs"][0][1] is None

    df = pd.read_parquet(path)
    assert list(df.columns) == expected
    np.testing.assert_array_equal(df["label"].to_numpy(), cache.label)
    np.testing.assert_array_equal(df["sample"].to_numpy(), cache.sample)
    np.testing.assert_array_equal(df["p2.mlp0.conf"].to_numpy(), cache.conf[2, 0])
    np.testing.assert_array_equal(df["p1.mlp1.pred"].to_numpy(), cache.pred[1, 1])
    assert df["final.conf"].dtype == np.float32 and df["p2.mlp0.pred"].dtype == np.int32


def test_duckdb_reads_the_file(cache, path):
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    n, acc = con.execute(f"SELECT count(*), avg(CAST(\"final.pred\" = label AS DOUBLE)) FROM '{path}'").fetchone()
    assert n == cache.n_samples and acc == pytest.approx(cache.head_accuracy)
    query = f"SELECT decode(value)::JSON->>'backbone' FROM parquet_kv_metadata('{path}') WHERE decode(key) = 'dyce'"
    assert con.execute(query).fetchone() == ("toy",)


# ------------------------------------------------------------------ bad files


def _table(cache):
    return cache.to_arrow()


def _write(tmp_path, table, name="bad.parquet"):
    target = tmp_path / name
    pq.write_table(table, target)
    return target


def _with_metadata(table, **changes):
    md = json.loads(table.schema.metadata[b"dyce"])
    for key, value in changes.items():
        md[key] = value(md[key]) if callable(value) else value
    return table.replace_schema_metadata({b"dyce": json.dumps(md).encode()})


def _replace_column(table, name, values, typ=None):
    i = table.column_names.index(name)
    return table.set_column(
        i,
        pa.field(name, typ or table.schema.field(name).type),
        pa.array(values, type=typ or table.schema.field(name).type),
    )


def _read_error(target) -> str:
    with pytest.raises(CacheError) as info:
        ExitCache.read(target)
    msg = str(info.value)
    assert msg.startswith(str(target)), msg
    return msg


def test_read_missing_file(tmp_path):
    assert "no such file" in _read_error(tmp_path / "nope.parquet")


def test_read_truncated_file(tmp_path, path):
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 3, 5):
        target = tmp_path / f"trunc{cut}.parquet"
        target.write_bytes(data[:cut])
        assert "not a readable Parquet file" in _read_error(target)


def test_read_corrupt_data_page(tmp_path):
    c = ExitCache(**make_arrays(M=2000, C=1000))
    target = c.write(tmp_path / "rot.parquet")
    data = bytearray(target.read_bytes())
    with pq.ParquetFile(target) as pf:
        chunk = pf.metadata.row_group(0).column(pf.schema_arrow.names.index("p1.mlp0.conf"))
        start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
        middle = start + chunk.total_compressed_size // 2
    data[middle] ^= 0xFF  # one flipped byte inside the column's pages: values would silently change
    target.write_bytes(bytes(data))
    msg = _read_error(target)
    assert "not a readable Parquet file" in msg and "checksum" in msg


def test_read_random_bytes_and_directory(tmp_path):
    target = tmp_path / "junk.parquet"
    target.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not a readable Parquet file" in _read_error(target)
    (tmp_path / "dir.parquet").mkdir()
    assert "not a readable Parquet file" in _read_error(tmp_path / "dir.parquet")


def test_read_plain_parquet_without_dyce_metadata(tmp_path, cache):
    target = _write(tmp_path, _table(cache).replace_schema_metadata(None))
    assert "no 'dyce' key" in _read_error(target)
    target = _write(tmp_path, pa.table({"a": [1, 2]}), "other.parquet")
    assert "not a dyce exit cache" in _read_error(target)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"version": 2}, r"unsupported dyce-exit-cache version 2"),
        ({"format": "something"}, r"format is 'something'"),
        ({"num_classes": "ten"}, r"'num_classes' must be an integer"),
        ({"total_macs": None}, r"'total_macs' must be an integer"),
        ({"positions": lambda v: [{"name": "a"}] + v[1:]}, r"entry 0 \('a'\) needs an integer 'backbone_macs'"),
        ({"positions": lambda v: [3] + v[1:]}, r"'positions' entry 0 must be an object"),
        (
            {"exit_types": lambda v: [{"hidden": []}] + v[1:]},
            r"'exit_types' entry 0 must be an object with a string 'name'",
        ),
        ({"exit_macs": lambda v: v[:-1]}, r"'exit_macs' has 2 rows, expected one per position \(3\)"),
        ({"exit_macs": lambda v: [v[0], v[1], [1]]}, r"'exit_macs' row 2 must be a list of 2 entries"),
        ({"exit_macs": lambda v: [v[0], v[1], [1, "x"]]}, r"'exit_macs' \[2\]\[1\] must be an integer or null"),
    ],
)
def test_read_bad_metadata(tmp_path, cache, changes, match):
    target = _write(tmp_path, _with_metadata(_table(cache), **changes))
    msg = _read_error(target)
    assert re.search(match, msg), msg


def test_read_metadata_not_json(tmp_path, cache):
    target = _write(tmp_path, _table(cache).replace_schema_metadata({b"dyce": b"{not json"}))
    assert "not valid JSON" in _read_error(target)


def test_read_missing_column(tmp_path, cache):
    target = _write(tmp_path, _table(cache).drop_columns(["p1.mlp1.conf"]))
    assert "missing column 'p1.mlp1.conf'" in _read_error(target)


def test_read_missing_column_when_metadata_claims_an_exit(tmp_path, cache):
    target = _write(tmp_path, _with_metadata(_table(cache), exit_macs=lambda v: [[1, 2], v[1], v[2]]))
    assert "missing column 'p0.mlp1.pred'" in _read_error(target)


def test_read_extra_column(tmp_path, cache):
    t = _table(cache)
    target = _write(tmp_path, t.append_column("p0.mlp9.conf", pa.array(np.zeros(t.num_rows, np.float32))))
    assert "unexpected column 'p0.mlp9.conf'" in _read_error(target)


def test_read_extra_column_of_absent_exit(tmp_path, cache):
    t = _table(cache)
    target = _write(tmp_path, t.append_column("p0.mlp1.pred", pa.array(np.zeros(t.num_rows, np.int32))))
    assert "unexpected column 'p0.mlp1.pred'" in _read_error(target)


@pytest.mark.parametrize(
    "column, typ",
    [
        ("p1.mlp0.conf", pa.float64()),
        ("p1.mlp0.pred", pa.int64()),
        ("label", pa.int64()),
        ("sample", pa.int32()),
        ("final.conf", pa.float16()),
    ],
)
def test_read_wrong_dtype(tmp_path, cache, column, typ):
    t = _table(cache)
    values = t.column(column).to_numpy().astype(typ.to_pandas_dtype())
    target = _write(tmp_path, _replace_column(t, column, values, typ))
    msg = _read_error(target)
    assert f"column {column!r} has type {typ}" in msg


def test_read_nulls(tmp_path, cache):
    t = _table(cache)
    values = t.column("p2.mlp1.pred").to_pylist()
    values[3] = None
    target = _write(tmp_path, _replace_column(t, "p2.mlp1.pred", values))
    assert "column 'p2.mlp1.pred' has 1 null values" in _read_error(target)


def test_read_duplicate_column(tmp_path, cache):
    t = _table(cache)
    target = _write(tmp_path, t.append_column("label", t.column("label")))
    assert "column 'label' appears more than once" in _read_error(target)


def _with_values(table, column, index, value):
    values = table.column(column).to_numpy().copy()
    values[index] = value
    return _replace_column(table, column, values)


@pytest.mark.parametrize(
    "column, index, value, match",
    [
        ("p1.mlp0.conf", 2, np.nan, r"column 'p1\.mlp0\.conf': confidence nan at row 2 \(sample 102\)"),
        ("p1.mlp1.conf", 0, 1.5, r"column 'p1\.mlp1\.conf': confidence 1\.5 at row 0"),
        ("final.conf", 7, -np.inf, r"column 'final\.conf': confidence -inf at row 7"),
        ("p2.mlp0.pred", 1, -3, r"column 'p2\.mlp0\.pred': prediction -3 at row 1"),
        ("final.pred", 1, 10, r"column 'final\.pred': prediction 10 at row 1 .* num_classes=10"),
        ("label", 6, -2, r"column 'label': label -2 at row 6"),
    ],
)
def test_read_bad_values(tmp_path, cache, column, index, value, match):
    target = _write(tmp_path, _with_values(_table(cache), column, index, value))
    assert re.search(match, _read_error(target))


def test_read_label_equal_to_num_classes(tmp_path):
    c = ExitCache(**make_arrays(C=1000))
    target = _write(tmp_path, _with_values(_table(c), "label", 0, 1000))
    msg = _read_error(target)
    assert "column 'label': label 1000 at row 0" in msg and "[-1, 1000)" in msg


def test_read_non_increasing_macs(tmp_path, cache):
    def flat(positions):
        positions[2]["backbone_macs"] = positions[1]["backbone_macs"]
        return positions

    target = _write(tmp_path, _with_metadata(_table(cache), positions=flat))
    assert "strictly increasing" in _read_error(target)


def test_read_negative_exit_macs(tmp_path, cache):
    target = _write(tmp_path, _with_metadata(_table(cache), exit_macs=lambda v: [v[0], [-4, v[1][1]], v[2]]))
    msg = _read_error(target)
    assert "exit_macs of exit type 'mlp0' at position 1" in msg and "-4" in msg


def test_read_duplicate_position_names(tmp_path, cache):
    def dup(positions):
        positions[1]["name"] = positions[0]["name"]
        return positions

    target = _write(tmp_path, _with_metadata(_table(cache), positions=dup))
    assert "duplicate name 'layer1.0'" in _read_error(target)


def test_read_zero_rows(tmp_path, cache):
    target = _write(tmp_path, _table(cache).slice(0, 0))
    assert "zero samples" in _read_error(target)


def test_read_file_written_in_several_row_groups(tmp_path, cache):
    target = tmp_path / "groups.parquet"
    pq.write_table(_table(cache), target, row_group_size=7)
    assert ExitCache.read(target).equals(cache)


def test_read_ignores_column_order(tmp_path, cache):
    t = _table(cache)
    target = _write(tmp_path, t.select(list(reversed(t.column_names))))
    assert ExitCache.read(target).equals(cache)


# ---------------------------------------------------------------- atomic write


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, cache, monkeypatch):
    target = cache.write(tmp_path / "cache.parquet")
    before = target.read_bytes()
    original = pq.ParquetWriter.write_table

    def write_then_fail(self, table, *args, **kwargs):
        original(self, table.slice(0, 3), *args, **kwargs)  # some bytes reach the temp file
        raise OSError("disk full")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        cache.take(np.arange(10)).write(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.parquet"]
    assert ExitCache.read(target).equals(cache)


def test_failed_write_of_new_file_leaves_nothing(tmp_path, cache, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        cache.write(tmp_path / "new.parquet")
    assert list(tmp_path.iterdir()) == []


def test_write_to_missing_directory_raises_oserror(tmp_path, cache):
    with pytest.raises(OSError):
        cache.write(tmp_path / "no" / "such" / "dir.parquet")


# ------------------------------------------------------------- summaries


def test_head_and_standalone_accuracy_match_loops():
    c = ExitCache(**make_arrays(P=3, K=2, M=200, C=3, seed=5, unknown_labels=30))
    known = [i for i in range(c.n_samples) if c.label[i] >= 0]
    # A_ori as every search uses it: with any label unknown, accuracy is agreement with the head
    assert c.head_accuracy == 1.0
    labelled = ExitCache(**make_arrays(P=3, K=2, M=200, C=3, seed=5))
    assert labelled.head_accuracy == np.mean([labelled.final_pred[i] == labelled.label[i] for i in range(200)])
    acc = c.standalone_accuracy()
    assert acc.dtype == np.float64 and acc.shape == (3, 2)
    for p in range(3):
        for k in range(2):
            if not c.available[p, k]:
                assert np.isnan(acc[p, k])
            else:
                assert acc[p, k] == pytest.approx(np.mean([c.pred[p, k, i] == c.label[i] for i in known]))
    agree = c.standalone_accuracy(against="head")
    assert agree[1, 1] == pytest.approx(np.mean(c.pred[1, 1] == c.final_pred))
    with pytest.raises(ValueError, match="against"):
        c.standalone_accuracy(against="oracle")


def test_accuracy_without_labels():
    c = ExitCache(**make_arrays(M=20, unknown_labels=20))
    assert c.head_accuracy == 1.0  # agreement with the head
    assert np.isnan(c.standalone_accuracy()).all()
    assert "no labels" in repr(c)


def test_repr(cache):
    r = repr(cache)
    assert r.startswith("ExitCache(toy on digits/val, 40 samples, 3 positions x 2 exit types (5 available), 10 classes")
    assert "head accuracy" in r and "synthetic" not in r


def test_fingerprint_and_check_compatible(cache):
    assert cache.fingerprint == {
        "backbone": "toy",
        "num_classes": 10,
        "positions": ["layer1.0", "layer1.1", "layer2.0"],
        "exit_types": ["mlp0", "mlp1"],
    }
    other = ExitCache(**make_arrays(seed=9))
    cache.check_compatible(other)
    assert cache.fingerprint == other.fingerprint

    kw = make_arrays()
    kw["metadata"] = {**kw["metadata"], "backbone": "resnet50"}
    with pytest.raises(CacheError, match=r"backbone 'toy' vs 'resnet50'"):
        cache.check_compatible(ExitCache(**kw))
    with pytest.raises(CacheError, match=r"3 vs 2 positions"):
        cache.check_compatible(cache.select(positions=[0, 1]))
    with pytest.raises(CacheError, match=r"exit_types differ at index 0: 'mlp0' vs 'mlp1'"):
        cache.check_compatible(cache.select(exit_types=["mlp1", "mlp0"]))
    with pytest.raises(CacheError, match=r"num_classes 10 vs 12"):
        cache.check_compatible(ExitCache(**make_arrays(C=12)))
    kw = make_arrays()
    kw["positions"] = ("a", "b", "c")
    kw["metadata"] = {"backbone": "toy"}
    with pytest.raises(CacheError, match=r"positions differ at index 0: 'layer1.0' vs 'a'"):
        cache.check_compatible(ExitCache(**kw))
    with pytest.raises(TypeError):
        cache.check_compatible("cache.parquet")


def test_equals(cache):
    assert cache.equals(ExitCache(**make_arrays()))
    assert not cache.equals(ExitCache(**make_arrays(seed=1)))
    assert not cache.equals(None)


# ------------------------------------------------------------------ subsets


def test_take_matches_indexing(cache):
    idx = np.array([5, 0, 5, 39])
    t = cache.take(idx)
    np.testing.assert_array_equal(t.label, cache.label[idx])
    np.testing.assert_array_equal(t.pred, cache.pred[:, :, idx])
    np.testing.assert_array_equal(t.conf, cache.conf[:, :, idx])
    np.testing.assert_array_equal(t.final_pred, cache.final_pred[idx])
    np.testing.assert_array_equal(t.final_conf, cache.final_conf[idx])
    np.testing.assert_array_equal(t.sample, cache.sample[idx])
    assert t.pred.flags.c_contiguous and t.conf.flags.c_contiguous
    assert t.metadata == cache.metadata and t.positions == cache.positions
    mask = cache.label % 2 == 0
    np.testing.assert_array_equal(cache.take(mask).sample, cache.sample[mask])


def test_take_rejects_bad_indices(cache):
    with pytest.raises(IndexError, match="40 out of range"):
        cache.take([0, 40])
    with pytest.raises(IndexError, match="-1 out of range"):
        cache.take([-1])
    with pytest.raises(IndexError, match="boolean mask has shape"):
        cache.take(np.ones(3, bool))
    with pytest.raises(IndexError, match="1-D integer array"):
        cache.take([0.5])
    with pytest.raises(CacheError, match="zero samples"):
        cache.take(np.zeros(40, bool))
    with pytest.raises(CacheError, match="zero samples"):
        cache.take([])


@given(fraction=st.floats(0.01, 0.99), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_split_is_a_disjoint_partition(fraction, seed):
    c = ExitCache(**make_arrays(M=60))
    n_first = round(fraction * 60)
    if not 0 < n_first < 60:
        with pytest.raises(ValueError):
            c.split(fraction, seed)
        return
    a, b = c.split(fraction, seed)
    assert a.n_samples == n_first and b.n_samples == 60 - n_first
    assert set(a.sample).isdisjoint(b.sample)
    assert sorted(np.concatenate([a.sample, b.sample])) == sorted(c.sample)
    assert (np.diff(a.sample) > 0).all() and (np.diff(b.sample) > 0).all()  # original order kept
    rows = np.searchsorted(c.sample, a.sample)
    np.testing.assert_array_equal(a.pred, c.pred[:, :, rows])
    a2, _ = c.split(fraction, seed)
    assert a2.equals(a)


def test_split_differs_by_seed_and_rejects_bad_fraction(cache):
    a, _ = cache.split(0.5, 1)
    b, _ = cache.split(0.5, 2)
    assert not np.array_equal(a.sample, b.sample)
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            cache.split(bad)


def test_select_by_name_and_index(cache):
    s = cache.select(positions=["layer2.0", 0], exit_types=["mlp1"])
    assert s.positions == ("layer1.0", "layer2.0") and s.exit_types == ("mlp1",)
    np.testing.assert_array_equal(s.pred, cache.pred[[0, 2]][:, [1]])
    np.testing.assert_array_equal(s.conf, cache.conf[[0, 2]][:, [1]])
    np.testing.assert_array_equal(s.available, [[False], [True]])
    np.testing.assert_array_equal(s.exit_macs, cache.exit_macs[[0, 2]][:, [1]])
    np.testing.assert_array_equal(s.backbone_macs, cache.backbone_macs[[0, 2]])
    assert s.total_macs == cache.total_macs
    assert [p["channels"] for p in s.metadata["positions"]] == [8, 24]
    assert s.metadata["exit_types"] == [{"name": "mlp1", "hidden": [5]}]
    assert s.metadata["exit_macs"] == [[None], [int(cache.exit_macs[2, 1])]]
    assert s.pred.flags.c_contiguous and s.conf.flags.c_contiguous
    np.testing.assert_array_equal(s.label, cache.label)


def test_select_reorders_types_and_round_trips(tmp_path, cache):
    s = cache.select(exit_types=[1, 0])
    assert s.exit_types == ("mlp1", "mlp0")
    np.testing.assert_array_equal(s.conf[:, 0], cache.conf[:, 1])
    assert ExitCache.read(s.write(tmp_path / "s.parquet")).equals(s)
    assert cache.select().equals(cache)


def test_select_rejects_bad_selection(cache):
    with pytest.raises(
        CacheError, match=r"unknown position 'layer9\.9'; the cache has layer1\.0, layer1\.1, layer2\.0"
    ):
        cache.select(positions=["layer9.9"])
    with pytest.raises(CacheError, match="exit type index 2 out of range"):
        cache.select(exit_types=[2])
    with pytest.raises(CacheError, match="duplicate position"):
        cache.select(positions=[0, "layer1.0"])
    assert cache.select(positions="layer2.0", exit_types=1).pred.shape == (1, 1, 40)
    with pytest.raises(CacheError, match="keeps no exit type"):
        cache.select(exit_types=[])
    with pytest.raises(TypeError):
        cache.select(positions=[1.0])


def test_arrow_round_trip_and_errors(cache):
    table = cache.to_arrow()
    assert ExitCache.from_arrow(table).equals(cache)
    with pytest.raises(CacheError, match=r"^arrow table: missing column 'label'"):
        ExitCache.from_arrow(table.drop_columns(["label"]))
    with pytest.raises(CacheError, match=r"^arrow table: column 'p1\.mlp1\.conf': confidence 1\.5 at row 2"):
        ExitCache.from_arrow(_with_values(table, "p1.mlp1.conf", 2, 1.5))
