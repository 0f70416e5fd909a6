"""The searches (Algorithms 2 and 3, shared-threshold baseline) against brute force."""

from __future__ import annotations

import math
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import naive_search
from dyce_search import synthetic
from dyce_search.evaluation import evaluate
from dyce_search.search import allowed_exits, run
from dyce_search.problem import Problem
from strategies import exit_caches, random_costs

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIGITS_CALIBRATION = Path(__file__).resolve().parents[1] / "data" / "digits" / "cache-calibration.parquet"
LAMBDAS = st.lists(st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]) | st.floats(0, 1), min_size=1, max_size=3)


@st.composite
def searches(draw, max_samples=12):
    """(cache, costs or None, objective, lambdas, positions or None, exit_types or None)."""
    cache = draw(exit_caches(max_positions=4, max_types=3, max_samples=max_samples))
    costs = draw(st.none() | random_costs(cache))
    kind = draw(st.sampled_from(["paper", "normalized"]))
    try:
        Problem(cache, costs, kind).coefficients(0.5)
    except ValueError:  # objective undefined on this cache
        assume(False)
    positions = draw(st.none() | st.lists(st.integers(0, cache.n_positions - 1), unique=True))
    types = draw(st.none() | st.lists(st.sampled_from(cache.exit_types), unique=True))
    return cache, costs, kind, draw(LAMBDAS), positions, types


def _configs(result):
    return [(c.exit_types, c.thresholds) for c in result.configs]


def _same(a, b):
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1], equal_nan=True)


@SETTINGS
@given(searches())
def test_single_pass_equals_brute_force_and_never_loses(args):
    cache, costs, kind, lambdas, positions, types = args
    prep = Problem(cache, costs, kind)
    allowed = allowed_exits(cache, positions, types)
    result = run(cache, lambdas, method="single_pass", costs=costs, objective=kind, positions=positions,
                 exit_types=types, progress=False)
    empty = (np.full(cache.n_positions, -1), np.full(cache.n_positions, np.nan))
    for lam, got in zip(lambdas, _configs(result)):
        k, t, f = naive_search.single_pass(prep, lam, allowed)
        assert _same(got, (k, t))
        assert naive_search.value(prep, lam, *got) <= naive_search.value(prep, lam, *empty)
        assert not (got[0][~allowed.any(axis=1)] >= 0).any()


@SETTINGS
@given(searches(max_samples=10))
def test_iterative_equals_brute_force_and_is_a_local_optimum(args):
    cache, costs, kind, lambdas, positions, types = args
    prep = Problem(cache, costs, kind)
    allowed = allowed_exits(cache, positions, types)
    result = run(cache, lambdas, method="iterative", costs=costs, objective=kind, positions=positions,
                 exit_types=types, progress=False)
    for lam, got in zip(lambdas, _configs(result)):
        k, t, f, _ = naive_search.iterative(prep, lam, allowed)
        assert _same(got, (k, t))
        # no single-position change (any k_c incl. none, any candidate threshold) lowers f
        change, _ = naive_search.best_change(prep, lam, got[0], got[1], allowed)
        assert change is None


@SETTINGS
@given(searches(max_samples=10), st.integers(1, 3))
def test_iterative_stops_after_max_rounds(args, max_rounds):
    cache, costs, kind, lambdas, positions, types = args
    prep = Problem(cache, costs, kind)
    allowed = allowed_exits(cache, positions, types)
    result = run(cache, lambdas, method="iterative", costs=costs, objective=kind, positions=positions,
                 exit_types=types, max_rounds=max_rounds, progress=False)
    for lam, got in zip(lambdas, _configs(result)):
        k, t, _, rounds = naive_search.iterative(prep, lam, allowed, max_rounds=max_rounds)
        assert rounds <= max_rounds
        assert _same(got, (k, t))


@SETTINGS
@given(searches(), st.booleans())
def test_baseline_equals_brute_force_over_shared_thresholds(args, best):
    cache, costs, kind, lambdas, positions, types = args
    prep = Problem(cache, costs, kind)
    allowed = allowed_exits(cache, positions, types)
    usable = [k for k in range(cache.n_types) if allowed[:, k].any()]
    assume(usable)
    baseline_type = "best" if best else cache.exit_types[usable[-1]]
    result = run(cache, lambdas, method="baseline", costs=costs, objective=kind, positions=positions,
                 exit_types=types, baseline_type=baseline_type, progress=False)
    P = cache.n_positions
    for lam, got in zip(lambdas, _configs(result)):
        best_f = naive_search.value(prep, lam, np.full(P, -1), np.full(P, np.nan))
        want = (np.full(P, -1), np.full(P, np.nan))
        for k in usable if best else usable[-1:]:
            t, f = naive_search.baseline(prep, lam, allowed, k)
            if f < best_f:
                best_f = f
                want = (np.where(allowed[:, k], k, -1), np.where(allowed[:, k], t, np.nan))
        assert _same(got, want)


@SETTINGS
@given(searches(max_samples=10), st.sampled_from(["descent", "single_pass", "iterative", "baseline"]))
def test_table_metrics_come_from_evaluate(args, method):
    cache, costs, kind, lambdas, positions, types = args
    result = run(cache, lambdas, method=method, costs=costs, objective=kind, positions=positions,
                 exit_types=types, progress=False)
    prep = Problem(cache, costs, kind)
    table = result.table
    assert len(table) == len(lambdas) == len(result.configs)
    for row, config in zip(table.to_dict("records"), result.configs):
        ev = evaluate(cache, config, costs, objective=kind, lam=row["lambda"])
        assert (row["rel_cost"], row["rel_accuracy"], row["accuracy"], row["cost"], row["f"]) == (
            ev.rel_cost, ev.rel_accuracy, ev.accuracy, ev.cost, ev.objective)
        assert row["n_exits"] == int(config.enabled.sum())
        # the search's exact-count objective agrees with evaluate's to rounding
        assert naive_search.value(prep, row["lambda"], config.exit_types, config.thresholds) == pytest.approx(
            row["f"], rel=1e-9, abs=1e-12)
    assert (table["method"] == method).all() and (table["threshold"] == "exact").all()
    assert (table["seconds"] >= 0).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(searches(max_samples=8))
def test_bounded_searches_equal_the_papers_scipy_minimiser(args):
    cache, costs, kind, lambdas, positions, types = args
    prob = Problem(cache, costs, kind)
    allowed = allowed_exits(cache, positions, types)
    lam = lambdas[0]
    sp = run(cache, [lam], method="single_pass", threshold="bounded", costs=costs, objective=kind,
             positions=positions, exit_types=types, progress=False)
    k, t, _ = naive_search.single_pass(prob, lam, allowed, bounded=True)
    assert _same(_configs(sp)[0], (k, t))
    it = run(cache, [lam], method="iterative", threshold="bounded", costs=costs, objective=kind,
             positions=positions, exit_types=types, max_rounds=2, progress=False)
    k, t, _, _ = naive_search.iterative(prob, lam, allowed, max_rounds=2, bounded=True)
    assert _same(_configs(it)[0], (k, t))


@SETTINGS
@given(searches(max_samples=10))
def test_descent_is_a_local_optimum_never_worse_than_any_start_or_paper_method(args):
    cache, costs, kind, lambdas, positions, types = args
    prob = Problem(cache, costs, kind)
    allowed = allowed_exits(cache, positions, types)
    options = dict(costs=costs, objective=kind, positions=positions, exit_types=types, progress=False)
    result = run(cache, lambdas, method="descent", **options)
    others = [run(cache, lambdas, method="single_pass", **options),
              run(cache, lambdas, method="single_pass", threshold="bounded", **options),
              run(cache, lambdas, method="baseline", **options),
              run(cache, lambdas, method="iterative", max_rounds=1, **options)]
    P = cache.n_positions
    for j, (lam, got) in enumerate(zip(lambdas, _configs(result))):
        f = naive_search.value(prob, lam, *got)
        assert f == result.table["f"].iloc[j] or f == pytest.approx(result.table["f"].iloc[j], rel=1e-12)
        assert f <= naive_search.value(prob, lam, np.full(P, -1), np.full(P, np.nan))
        for other in others[:3]:
            assert f <= naive_search.value(prob, lam, *_configs(other)[j])
        # Algorithm 2's local optimality: no single-position change lowers f
        assert naive_search.improving_change(prob, lam, *got, allowed) is None
        # nothing enabled where the search may not, and no exit that no sample reaches
        assert not (got[0][~allowed.any(axis=1)] >= 0).any()
        for p in np.flatnonzero(got[0] >= 0):
            assert naive_search.reaching(prob, *got, p)
        # thresholds never sit on the confidence of a sample that reaches their position
        for p in np.flatnonzero(got[0] >= 0):
            confs = {float(cache.conf[p, got[0][p], m]) for m in naive_search.reaching(prob, *got, p)}
            assert got[1][p] not in confs or got[1][p] == 0.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exit_caches(max_positions=3, max_types=2, max_samples=8, labels="known"), st.sampled_from([0.2, 0.5, 0.8, 0.95]))
def test_exhaustive_search_is_never_beaten(cache, lam):
    # sanity of the brute force and of the search: the global minimum over every
    # configuration (types x candidate thresholds) bounds every method from below
    prob = Problem(cache)
    try:
        prob.coefficients(lam)
    except ValueError:
        assume(False)
    allowed = np.asarray(cache.available, bool)
    best = naive_search.exhaustive(prob, lam, allowed)
    got = _configs(run(cache, [lam], method="descent", progress=False))[0]
    assert naive_search.value(prob, lam, *got) >= best


@SETTINGS
@given(searches(max_samples=10), st.sampled_from(["single_pass", "iterative", "baseline"]))
def test_bounded_searches_never_accept_a_worse_configuration(args, method):
    cache, costs, kind, lambdas, positions, types = args
    lambdas = lambdas[:1]
    prep = Problem(cache, costs, kind)
    result = run(cache, lambdas, method=method, threshold="bounded", costs=costs, objective=kind,
                 positions=positions, exit_types=types, max_rounds=3, progress=False)
    P = cache.n_positions
    got = _configs(result)[0]
    assert naive_search.value(prep, lambdas[0], *got) <= naive_search.value(
        prep, lambdas[0], np.full(P, -1), np.full(P, np.nan))
    assert (result.table["threshold"] == "bounded").all()


@pytest.mark.parametrize("method", ["descent", "single_pass", "iterative", "baseline"])
def test_one_and_two_threads_give_identical_results(method):
    cache = synthetic.make_cache("resnet18", n_samples=3000, n_classes=100, seed=3)
    lambdas = np.linspace(0, 1, 9)
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            results.append(run(cache, lambdas, method=method, progress=False))
    finally:
        numba.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(_configs(results[0]), _configs(other)):
            assert _same(a, b)
        cols = ["f", "rel_cost", "rel_accuracy"]
        pd.testing.assert_frame_equal(results[0].table[cols], other.table[cols])


def test_iterative_is_never_worse_than_single_pass_start_and_positions_restrict():
    cache = synthetic.make_cache("resnet18", n_samples=2000, n_classes=100, seed=1)
    lambdas = [0.3, 0.6, 0.9]
    res = run(cache, lambdas, method="iterative", positions=range(3, cache.n_positions), exit_types=["mlp1", 2],
              progress=False)
    for c in res.configs:
        assert (c.exit_types[:3] == -1).all()
        assert set(c.exit_types[c.enabled].tolist()) <= {0, 2}
    assert res.metadata["allowed_positions"] == list(range(3, cache.n_positions))
    assert res.metadata["allowed_exit_types"] == [0, 2]
    empty = evaluate(cache, ([-1] * cache.n_positions, [np.nan] * cache.n_positions), lam=0.6).objective
    assert res.table["f"].iloc[1] < empty


def test_paths_for_cache_and_costs(tmp_path):
    cache = synthetic.make_cache("resnet18", n_samples=500, n_classes=10)
    from dyce_search.costs import Costs

    cache_path = cache.write(tmp_path / "cache.parquet")
    costs = Costs.from_cache(cache)
    costs.save(tmp_path / "costs.json")
    a = run(cache_path, [0.5], costs=tmp_path / "costs.json", progress=False)
    b = run(cache, [0.5], progress=False)
    assert _same(_configs(a)[0], _configs(b)[0])
    assert a.metadata["method"] == "descent" and a.metadata["cost_unit"] == "macs"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lambdas": []}, "empty"),
        ({"lambdas": [0.5, float("nan")]}, "index 1"),
        ({"lambdas": [1.5]}, r"\[0, 1\]"),
        ({"lambdas": [-0.1]}, r"\[0, 1\]"),
        ({"lambdas": [[0.1]]}, "one-dimensional"),
        ({"method": "greedy"}, "method"),
        ({"method": "descent", "threshold": "bounded"}, "supports threshold 'exact'"),
        ({"threshold": "golden"}, "threshold"),
        ({"objective": "other"}, "objective"),
        ({"max_rounds": 0}, "max_rounds"),
        ({"positions": ["nope"]}, "unknown position"),
        ({"exit_types": [7]}, "exit type index 7"),
        ({"method": "baseline", "baseline_type": "nope"}, "unknown exit type"),
    ],
)
def test_bad_arguments(kwargs, message):
    cache = synthetic.make_cache("resnet18", n_samples=50, n_classes=10)
    kwargs = {"lambdas": [0.5], **kwargs}
    with pytest.raises(ValueError, match=message):
        run(cache, progress=False, **kwargs)


@pytest.mark.parametrize("method", ["descent", "single_pass", "iterative", "baseline"])
def test_nothing_allowed_gives_the_original_model(method):
    cache = synthetic.make_cache("resnet18", n_samples=200, n_classes=10)
    res = run(cache, [0.0, 0.5, 1.0], method=method, positions=[], progress=False)
    assert all(not c.enabled.any() for c in res.configs)
    assert np.allclose(res.table["rel_cost"], 1.0)
    assert math.isclose(res.table["rel_accuracy"].iloc[0], 1.0)


def _shifted(cache, delta):
    """The cache with every confidence moved by ``delta`` (as if recomputed on another machine)."""
    from dyce_search.cache import ExitCache

    conf = cache.conf.astype(np.float64) + delta
    conf = np.where(np.isnan(conf), np.nan, np.clip(conf, 0.0, 1.0)).astype(np.float32)
    fields = ("label", "pred", "final_pred", "final_conf", "backbone_macs", "exit_macs", "available", "total_macs",
              "positions", "exit_types", "sample", "num_classes", "metadata")
    return ExitCache(conf=conf, **{f: getattr(cache, f) for f in fields})


def _on_recorded_values(cache, config):
    """The same configuration with each threshold on the lowest confidence that leaves (the previous rule)."""
    from dyce_search.config import Config
    from dyce_search.evaluation import simulate

    sim = simulate(cache, config)
    t = config.thresholds.copy()
    for p in np.flatnonzero(config.enabled):
        leaving = sim.position == p
        if leaving.any():
            t[p] = float(cache.conf[p, config.exit_types[p]][leaving].min())
    return Config(config.exit_types, t)


def test_thresholds_survive_confidences_recomputed_a_few_ulps_off():
    # Another machine recomputes confidences up to ~3e-7 differently; thresholds halfway
    # between recorded confidences keep almost every sample where the search put it.
    from dyce_search import ExitCache
    from dyce_search.evaluation import simulate

    cache = ExitCache.read(DIGITS_CALIBRATION)
    result = run(cache, np.linspace(0, 1, 51), progress=False)
    moved = {"placed": 0, "recorded": 0}
    for config in result.configs:
        for label, c in (("placed", config), ("recorded", _on_recorded_values(cache, config))):
            base = simulate(cache, c).position
            for delta in (-3e-7, 3e-7):
                moved[label] += int((simulate(_shifted(cache, delta), c).position != base).sum())
    assert moved["placed"] * 10 <= moved["recorded"], moved


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(searches(max_samples=8), st.sampled_from([0.05, 0.1, 0.3]))
def test_conservative_single_pass_equals_the_released_codes_search(args, alpha):
    cache, costs, kind, lambdas, positions, types = args
    prob = Problem(cache, costs, kind)
    allowed = allowed_exits(cache, positions, types)
    lam = lambdas[0]
    result = run(cache, [lam], method="single_pass", threshold="bounded", conservative=alpha, costs=costs,
                 objective=kind, positions=positions, exit_types=types, progress=False)
    k, t = naive_search.conservative_single_pass(prob, lam, allowed, alpha)
    assert _same(_configs(result)[0], (k, t))
    row = result.table.iloc[0]
    assert row["f"] == pytest.approx(naive_search.conservative_value(prob, lam, k, t, alpha), rel=1e-9, abs=1e-12)
    assert result.metadata["conservative"] == alpha


def test_conservative_objective_is_offered_where_the_released_code_has_it():
    cache = synthetic.make_cache("resnet18", n_samples=300, n_classes=10)
    for kwargs in ({"method": "descent"}, {"method": "single_pass"}, {"method": "baseline", "threshold": "bounded"}):
        with pytest.raises(ValueError, match="conservative objective needs"):
            run(cache, [0.5], conservative=0.1, progress=False, **kwargs)
    with pytest.raises(ValueError, match=r"conservative must be in \(0, 1\)"):
        run(cache, [0.5], method="iterative", threshold="bounded", conservative=1.0, progress=False)
    it = run(cache, [0.5, 0.9], method="iterative", threshold="bounded", conservative=0.1, max_rounds=3,
             progress=False)
    for row, config in zip(it.table.to_dict("records"), it.configs):
        ev = evaluate(cache, config, lam=row["lambda"], conservative=0.1)
        assert row["f"] == ev.objective and row["conservative_rel_accuracy"] == ev.conservative_rel_accuracy
