"""Threshold minimisation (Eq. 13) and its kernels against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import naive
import naive_search
from dyce_search.cache import ExitCache
from dyce_search.config import Config
from dyce_search.errors import ResultError
from dyce_search.problem import Problem
from dyce_search.thresholds import Candidate, minimize_threshold
from dyce_search._kernels.search import argsort_descending, column_keys
from dyce_search._kernels.thresholds import CORRECT_BIT, LAST_BIT, SAMPLE_MASK
from strategies import configs, exit_caches, random_costs

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LAMBDAS = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]) | st.floats(0, 1)


@st.composite
def problems(draw, objective=None):
    """(cache, config, position, exit type, lambda, costs, objective) with the exit available."""
    cache = draw(exit_caches(max_positions=4, max_types=3, max_samples=14))
    assume(cache.available.any())
    config = draw(configs(cache))
    p, k = draw(st.sampled_from([tuple(int(i) for i in pk) for pk in np.argwhere(cache.available)]))
    costs = draw(st.none() | random_costs(cache))
    kind = objective or draw(st.sampled_from(["paper", "normalized"]))
    return cache, config, p, k, draw(LAMBDAS), costs, kind


def prepared(cache, costs, kind):
    try:
        prep = Problem(cache, costs, kind)
        prep.coefficients(0.5)
        return prep
    except ValueError:  # objective undefined on this cache (e.g. the head is never right)
        assume(False)


@SETTINGS
@given(problems())
def test_exact_equals_brute_force(problem):
    cache, config, p, k, lam, costs, kind = problem
    prep = prepared(cache, costs, kind)
    t, f = minimize_threshold(cache, config, p, k, lam, costs=costs, objective=kind)
    t_ref, f_ref = naive_search.minimize_exact(prep, lam, config.exit_types, config.thresholds, p, k)
    if math.isnan(t_ref):
        assert math.isnan(t) and f == math.inf
    else:
        # bit-identical: same counts, same float expression; the largest t among equal minima
        assert (t, f) == (t_ref, f_ref)


@SETTINGS
@given(problems(objective="paper"))
def test_objective_matches_the_papers_equations(problem):
    cache, config, p, k, lam, costs, kind = problem
    prepared(cache, costs, kind)
    t, f = minimize_threshold(cache, config, p, k, lam, costs=costs, objective=kind)
    assume(not math.isnan(t))
    k_cfg, t_cfg = naive_search.with_change(config.exit_types, config.thresholds, p, k, t)
    segment = None if costs is None else list(costs.segment)
    exit_cost = None if costs is None else costs.exit.tolist()
    assert f == pytest.approx(naive.f_paper(cache, k_cfg, t_cfg, lam, segment, exit_cost), rel=1e-9, abs=1e-12)


@SETTINGS
@given(problems())
def test_bounded_is_never_better_than_exact(problem):
    cache, config, p, k, lam, costs, kind = problem
    prep = prepared(cache, costs, kind)
    t_e, f_e = minimize_threshold(cache, config, p, k, lam, method="exact", costs=costs, objective=kind)
    t_b, f_b = minimize_threshold(cache, config, p, k, lam, method="bounded", costs=costs, objective=kind)
    if math.isnan(t_e):
        return
    # The only value bounded can reach outside the candidate set: t above
    # every confidence (exit paid for, nobody leaves).
    nobody = naive_search.value(prep, lam, *naive_search.with_change(config.exit_types, config.thresholds, p, k, 2.0))
    assert f_b >= min(f_e, nobody)
    # and the value it reports is the objective at the threshold it returns
    assert f_b == naive_search.value(prep, lam, *naive_search.with_change(config.exit_types, config.thresholds, p, k, t_b))


@SETTINGS
@given(problems())
def test_bounded_reproduces_scipy_minimize_scalar(problem):
    cache, config, p, k, lam, costs, kind = problem
    prob = prepared(cache, costs, kind)
    got = minimize_threshold(cache, config, p, k, lam, method="bounded", costs=costs, objective=kind)
    want = naive_search.minimize_bounded(prob, lam, config.exit_types, config.thresholds, p, k)
    assert got == want or (math.isnan(got[0]) and math.isnan(want[0]) and got[1] == want[1])


@SETTINGS
@given(problems())
def test_exact_threshold_never_sits_on_a_reaching_confidence(problem):
    cache, config, p, k, lam, costs, kind = problem
    prob = prepared(cache, costs, kind)
    t, f = minimize_threshold(cache, config, p, k, lam, costs=costs, objective=kind)
    assume(not math.isnan(t))
    reach = naive_search.reaching(prob, config.exit_types, config.thresholds, p)
    confs = {float(cache.conf[p, k, m]) for m in reach}
    assert t not in confs or t == 0.0  # 0 only when the lowest reaching confidence is 0 itself
    # the same samples leave as at the recorded candidate it stands for
    higher = [c for c in confs if c >= t]
    assert higher and min(higher) > t or t == 0.0


def _tiny_cache(conf, pred, final_pred, label, exit_macs=0):
    M = len(label)
    return ExitCache(
        label=np.array(label, np.int32),
        pred=np.array(pred, np.int32).reshape(1, 1, M),
        conf=np.array(conf, np.float32).reshape(1, 1, M),
        final_pred=np.array(final_pred, np.int32),
        final_conf=np.full(M, 0.9, np.float32),
        backbone_macs=np.array([100], np.int64),
        exit_macs=np.array([[exit_macs]], np.int64),
        available=np.ones((1, 1), bool),
        total_macs=1000,
        positions=("p0",),
        exit_types=("e0",),
        sample=np.arange(M, dtype=np.int64),
        num_classes=3,
    )


def test_equal_minima_take_the_largest_threshold_placed_inside_its_gap():
    # lambda = 1: only accuracy counts. Sample 0 (conf 0.9) and sample 1
    # (conf 0.5) are right both early and at the head, sample 2 (conf 0.2) is
    # wrong early: t = 0.9 and t = 0.5 tie, t = 0.2 is worse. The winning gap
    # is (0.5, 0.9]; the threshold goes halfway.
    cache = _tiny_cache(conf=[0.9, 0.5, 0.2], pred=[0, 1, 0], final_pred=[0, 1, 2], label=[0, 1, 2])
    t, f = minimize_threshold(cache, Config.empty(1), 0, 0, 1.0)
    assert t == (float(np.float32(0.9)) + float(np.float32(0.5))) / 2
    prob = Problem(cache)
    assert f == naive_search.value(prob, 1.0, [0], [0.5])


def test_ties_exit_together():
    # Two samples share conf 0.5; the one wrong early makes t = 0.5 worse than t = 0.7 at lambda = 1.
    cache = _tiny_cache(conf=[0.7, 0.5, 0.5], pred=[0, 1, 0], final_pred=[0, 1, 2], label=[0, 1, 2])
    t, _ = minimize_threshold(cache, Config.empty(1), 0, 0, 1.0)
    assert float(np.float32(0.5)) < t < float(np.float32(0.7))
    # at lambda = 0 only cost counts: everything leaves; below the lowest confidence the gap reaches down to 0
    t0, _ = minimize_threshold(cache, Config.empty(1), "p0", "e0", 0.0)
    assert t0 == 0.25


def test_threshold_recomputed_a_little_lower_still_exits():
    # The run-time model recomputes confidences, e.g. 3e-7 lower on another
    # machine; a threshold equal to the recorded value would send such a
    # sample on. A gap of 0.2 leaves room either way.
    # Samples 0 and 1 are right at the exit, sample 2 is not: the best gap is (0.5, 0.7].
    cache = _tiny_cache(conf=[0.9, 0.7, 0.5], pred=[0, 1, 0], final_pred=[0, 1, 2], label=[0, 1, 2])
    t, _ = minimize_threshold(cache, Config.empty(1), 0, 0, 0.9)
    assert np.float32(0.7) - np.float32(3e-7) >= t > np.float32(0.5) + np.float32(3e-7)


def test_no_sample_reaching_gives_nan_and_inf():
    cache = ExitCache(
        label=np.array([0, 1], np.int32),
        pred=np.zeros((2, 1, 2), np.int32),
        conf=np.full((2, 1, 2), 0.5, np.float32),
        final_pred=np.array([0, 1], np.int32),
        final_conf=np.full(2, 0.9, np.float32),
        backbone_macs=np.array([10, 20], np.int64),
        exit_macs=np.array([[1], [1]], np.int64),
        available=np.ones((2, 1), bool),
        total_macs=100,
        positions=("a", "b"),
        exit_types=("e",),
        sample=np.arange(2, dtype=np.int64),
        num_classes=2,
    )
    config = Config(np.array([0, -1]), np.array([0.1, np.nan]))  # everyone leaves at position 0
    for method in ("exact", "bounded"):
        t, f = minimize_threshold(cache, config, 1, 0, 0.5, method=method)
        assert math.isnan(t) and f == math.inf


def test_bad_arguments():
    cache = _tiny_cache(conf=[0.9, 0.5], pred=[0, 1], final_pred=[0, 1], label=[0, 1])
    empty = Config.empty(1)
    for lam in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError, match="lambda"):
            minimize_threshold(cache, empty, 0, 0, lam)
    with pytest.raises(ValueError, match="method"):
        minimize_threshold(cache, empty, 0, 0, 0.5, method="golden")
    with pytest.raises(ValueError, match="unknown position 'nope'"):
        minimize_threshold(cache, empty, "nope", 0, 0.5)
    with pytest.raises(ValueError, match="exit type index 3"):
        minimize_threshold(cache, empty, 0, 3, 0.5)
    with pytest.raises(ResultError):
        minimize_threshold(cache, Config.empty(2), 0, 0, 0.5)


# ------------------------------------------------------------------ kernels


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, float("nan"), -0.0]) | st.floats(0, 1, width=32), max_size=60))
def test_argsort_descending_matches_numpy(values):
    v = np.array(values, np.float32)
    order, n_valid = argsort_descending(v)
    assert sorted(order.tolist()) == list(range(v.size))
    assert n_valid == int((~np.isnan(v)).sum())
    s = v[order]
    assert np.isnan(s[n_valid:]).all()
    assert (np.diff(s[:n_valid].astype(np.float64)) <= 0).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exit_caches(max_samples=30))
def test_column_keys_pack_sample_correctness_and_run_ends(cache):
    truth = Problem(cache).truth
    for p, k in np.argwhere(cache.available):
        conf, pred = cache.conf[p, k], cache.pred[p, k]
        keys = np.empty(cache.n_samples, np.int32)
        n_valid = column_keys(conf, pred, truth, keys)
        m = keys[:n_valid] & SAMPLE_MASK
        assert sorted(m.tolist()) == list(range(cache.n_samples))
        assert (np.diff(conf[m].astype(np.float64)) <= 0).all()
        assert np.array_equal((keys[:n_valid] & CORRECT_BIT) != 0, pred[m] == truth[m])
        last = np.append(conf[m][1:] != conf[m][:-1], True)
        assert np.array_equal((keys[:n_valid] & LAST_BIT) != 0, last)


@SETTINGS
@given(exit_caches(max_samples=20).flatmap(lambda c: st.tuples(st.just(c), configs(c), st.none() | random_costs(c))))
def test_config_state_counts_equal_algorithm_1(args):
    cache, config, costs = args
    prep = Problem(cache, costs)
    e, e2, c1, c2, cum, n_correct, cost_sum = prep.state(config.exit_types, config.thresholds)
    assert (n_correct, cost_sum) == naive_search.counts(prep, config.exit_types, config.thresholds)
    # e2: where each sample would leave with its own exit removed
    for m in range(cache.n_samples):
        if e[m] < cache.n_positions:
            k2, t2 = naive_search.with_change(config.exit_types, config.thresholds, int(e[m]), -1, math.nan)
            later = [p for p in range(cache.n_positions) if k2[p] >= 0 and cache.conf[p, k2[p], m] >= t2[p]]
            assert e2[m] == (later[0] if later else cache.n_positions)


@SETTINGS
@given(problems())
def test_candidate_value_equals_brute_force_at_any_threshold(problem):
    cache, config, p, k, lam, costs, kind = problem
    prep = prepared(cache, costs, kind)
    cand = Candidate(prep, prep.state(config.exit_types, config.thresholds), config.exit_types, p, lam)
    for t in (0.0, 0.25, 0.5, 0.73, 1.0, 1.5):
        assert cand.value(k, t) == naive_search.value(
            prep, lam, *naive_search.with_change(config.exit_types, config.thresholds, p, k, t)
        )
    assert cand.disabled() == naive_search.value(
        prep, lam, *naive_search.with_change(config.exit_types, config.thresholds, p, -1, math.nan)
    )
