"""Costs: S_n / Delta_{n,k} from MACs or a profile, JSON round trip, validation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dyce_search import CostError
from dyce_search.costs import Costs

from tests.strategies import exit_caches, random_costs

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(exit_caches())
def test_from_cache_is_the_macs(cache):
    costs = Costs.from_cache(cache)
    assert costs.unit == "macs"
    assert costs.segment.dtype == np.float64 and costs.segment.shape == (cache.n_positions + 1,)
    assert costs.exit.dtype == np.float64 and costs.exit.shape == (cache.n_positions, cache.n_types)
    assert costs.total == cache.total_macs
    np.testing.assert_array_equal(np.cumsum(costs.segment)[:-1], cache.backbone_macs)
    np.testing.assert_array_equal(costs.exit[cache.available], cache.exit_macs[cache.available])
    assert np.isnan(costs.exit[~cache.available]).all()
    assert costs.positions == cache.positions and costs.exit_types == cache.exit_types
    assert costs.check(cache) is costs


@SETTINGS
@given(st.data())
def test_normalized_is_the_papers_S_and_Delta(data):
    cache = data.draw(exit_caches())
    costs = data.draw(st.one_of(st.just(Costs.from_cache(cache)), random_costs(cache)))
    S, Delta = costs.normalized()
    assert S.sum() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(S * costs.total, costs.segment, rtol=1e-12)
    assert (Delta[~cache.available] == 0).all()
    np.testing.assert_allclose(Delta[cache.available] * costs.total, costs.exit[cache.available], rtol=1e-12)


@SETTINGS
@given(data=st.data())
def test_json_round_trip_is_exact(tmp_path_factory, data):
    cache = data.draw(exit_caches())
    costs = data.draw(st.one_of(st.just(Costs.from_cache(cache)), random_costs(cache)))
    path = tmp_path_factory.mktemp("costs") / "profile.json"
    costs.save(path)
    doc = json.loads(path.read_text())  # plain JSON, no NaN tokens
    assert doc["format"] == "dyce-costs" and doc["version"] == 1 and doc["unit"] == costs.unit
    assert len(doc["segment"]) == cache.n_positions + 1
    assert [[v is None for v in row] for row in doc["exit"]] == np.isnan(costs.exit).tolist()
    back = Costs.load(path)
    assert back.segment.tobytes() == costs.segment.tobytes()
    np.testing.assert_array_equal(back.exit, costs.exit)
    assert (back.unit, back.positions, back.exit_types, back.backbone) == (
        costs.unit,
        costs.positions,
        costs.exit_types,
        costs.backbone,
    )
    assert [p.name for p in path.parent.iterdir()] == ["profile.json"]


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    Costs([1.0, 2.0], [[1.0]], unit="ms").save(path)
    before = path.read_text()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        Costs([5.0, 5.0], [[1.0]], unit="ms").save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


@pytest.mark.parametrize(
    "segment, exit_, unit, match",
    [
        ([1.0, -1.0], [[1.0]], "ms", "segment cost 1 must be finite and >= 0"),
        ([1.0, np.nan], [[1.0]], "ms", "segment cost 1"),
        ([1.0, np.inf], [[1.0]], "ms", "segment cost 1"),
        ([0.0, 0.0], [[1.0]], "ms", "sum to 0"),
        ([[1.0, 2.0]], [[1.0]], "ms", "1-D"),
        ([1.0, 2.0], [1.0], "ms", r"shape \[P=1, K\]"),
        ([1.0, 2.0, 3.0], [[1.0]], "ms", r"shape \[P=2, K\]"),
        ([1.0, 2.0], [[-1.0]], "ms", "position 0, exit type 0 must be >= 0"),
        ([1.0, 2.0], [[np.inf]], "ms", "position 0, exit type 0"),
        ([1.0, 2.0], [[1.0]], "", "unit"),
    ],
)
def test_invalid_costs(segment, exit_, unit, match):
    with pytest.raises(CostError, match=match):
        Costs(segment, exit_, unit=unit)


def test_name_lists_must_fit():
    with pytest.raises(CostError, match="2 position names for 1 positions"):
        Costs([1.0, 2.0], [[1.0]], positions=("a", "b"))
    with pytest.raises(CostError, match="1 exit type names for 2 exit types"):
        Costs([1.0, 2.0], [[1.0, 1.0]], exit_types=("a",))


@given(exit_caches(max_positions=3, max_types=2))
@settings(max_examples=10, deadline=None)
def test_check_against_cache(cache):
    P, K = cache.n_positions, cache.n_types
    good = Costs.from_cache(cache)
    with pytest.raises(CostError, match=f"{P + 1} positions x {K}"):
        Costs(np.ones(P + 2), np.ones((P + 1, K))).check(cache)
    renamed = Costs(good.segment, good.exit, positions=("x",) + cache.positions[1:], exit_types=cache.exit_types)
    with pytest.raises(CostError, match="cost positions do not match the cache: 'x' vs 'pos0' at index 0"):
        renamed.check(cache)
    retyped = Costs(good.segment, good.exit, exit_types=cache.exit_types[:-1] + ("zz",))
    with pytest.raises(CostError, match="exit types do not match"):
        retyped.check(cache)
    if cache.available.any():
        p, k = np.argwhere(cache.available)[0]
        holes = good.exit.copy()
        holes[p, k] = np.nan
        with pytest.raises(CostError, match=f"no cost for exit type 'type{k}' at position 'pos{p}'"):
            Costs(good.segment, holes).check(cache)
    # names are optional: an anonymous profile of the right shape fits
    Costs(good.segment, good.exit).check(cache)


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"format": "other", "version": 1}', "field 'format' must be 'dyce-costs'"),
        ('{"format": "dyce-costs", "version": 9}', "unsupported 'version' 9"),
        ('{"format": "dyce-costs", "version": 1, "segment": [1, 2], "exit": [[1]]}', "missing field 'unit'"),
        ('{"format": "dyce-costs", "version": 1, "unit": "ms", "segment": ["a", 2], "exit": [[1]]}', "field 'segment'"),
        ('{"format": "dyce-costs", "version": 1, "unit": "ms", "segment": [1, 2], "exit": [1]}', "field 'exit'"),
        ('{"format": "dyce-costs", "version": 1, "unit": "ms", "segment": [1, 2], "exit": [["x"]]}', "field 'exit'"),
        (
            '{"format": "dyce-costs", "version": 1, "unit": "ms", "segment": [1, 2, 3], "exit": [[1], [1, 2]]}',
            "rows have different lengths",
        ),
        ('{"format": "dyce-costs", "version": 1, "unit": "ms", "segment": [1, -2], "exit": [[1]]}', "segment cost 1"),
        (
            '{"format": "dyce-costs", "version": 1, "unit": "ms", "segment": [1, 2], "exit": [[1]], "positions": [3]}',
            "field 'positions' must be a list of strings",
        ),
    ],
)
def test_load_malformed_names_file_and_field(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CostError, match=match) as info:
        Costs.load(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(OSError):
        Costs.load(tmp_path / "none.json")


def test_arrays_are_read_only_copies():
    seg = np.array([1.0, 2.0])
    costs = Costs(seg, [[1.0]])
    seg[0] = 100
    assert costs.segment[0] == 1.0
    with pytest.raises(ValueError):
        costs.segment[0] = 3.0


def test_load_ignores_extra_keys(tmp_path):
    """Writers may add provenance (e.g. extract.latency's "measurement"); readers keep working."""
    doc = Costs([1.0, 2.0], [[0.5, None]], unit="ms", positions=("a",), exit_types=("x", "y")).to_dict()
    doc["measurement"] = {"device": "cpu", "batch": 8}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    back = Costs.load(tmp_path / "p.json")
    assert back.unit == "ms" and back.exit_types == ("x", "y") and np.isnan(back.exit[0, 1])
