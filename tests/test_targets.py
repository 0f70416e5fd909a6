"""Budget targets (cheapest, most_accurate) and the dense front against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import naive_search
from dyce_search import cheapest, front, most_accurate, run, synthetic
from dyce_search.problem import Problem
from dyce_search.search import allowed_exits
from strategies import exit_caches, random_costs

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LAMBDAS = [0.0, 0.3, 0.6, 0.9, 1.0]


@st.composite
def target_problems(draw, max_samples=10):
    cache = draw(exit_caches(max_positions=4, max_types=3, max_samples=max_samples))
    costs = draw(st.none() | random_costs(cache))
    positions = draw(st.none() | st.lists(st.integers(0, cache.n_positions - 1), unique=True, min_size=1))
    return cache, costs, positions


def _all_sweeps(cache, costs, positions):
    """Configurations of every method's sweep on LAMBDAS."""
    out = []
    for method, threshold in (("descent", "exact"), ("single_pass", "exact"), ("single_pass", "bounded"),
                              ("baseline", "exact"), ("iterative", "exact")):
        out += _configs(run(cache, LAMBDAS, method=method, threshold=threshold, costs=costs, positions=positions,
                            progress=False))
    return out


def _config(result, i=0):
    c = result.configs[i]
    return c.exit_types, c.thresholds


@SETTINGS
@given(target_problems(), st.lists(st.sampled_from([0.0, 0.005, 0.02, 0.1, 0.3]) | st.floats(0, 0.99),
                                   min_size=1, max_size=3))
def test_cheapest_meets_its_drop_exactly_and_no_single_change_is_cheaper(problem, drops):
    cache, costs, positions = problem
    prob = Problem(cache, costs)
    assume(prob.n_head_correct > 0)
    allowed = allowed_exits(cache, positions)
    result = cheapest(cache, drops, lambdas=LAMBDAS, costs=costs, positions=positions, progress=False)
    sweep = _all_sweeps(cache, costs, positions)
    for j, drop in enumerate(drops):
        k, t = _config(result, j)
        need = prob.min_correct(drop)
        nc, cs = naive_search.counts(prob, k, t)
        assert nc >= need  # the constraint, on exact counts
        assert result.table["feasible"].iloc[j] and result.table["target"].iloc[j] == drop
        assert 1 - result.table["rel_accuracy"].iloc[j] <= drop + 1e-12
        assert naive_search.constrained_improvement(prob, k, t, allowed, min_correct=need) is None
        # never more expensive than a configuration of any method's sweep that meets the drop
        for kk, tt in sweep:
            nc2, cs2 = naive_search.counts(prob, kk, tt)
            if nc2 >= need:
                assert cs <= cs2


@SETTINGS
@given(target_problems(), st.lists(st.sampled_from([0.05, 0.3, 0.6, 1.0]) | st.floats(0.01, 1.5),
                                   min_size=1, max_size=3))
def test_most_accurate_keeps_its_budget_exactly_and_no_single_change_is_more_accurate(problem, budgets):
    cache, costs, positions = problem
    prob = Problem(cache, costs)
    assume(prob.n_head_correct > 0)
    allowed = allowed_exits(cache, positions)
    result = most_accurate(cache, budgets, lambdas=LAMBDAS, costs=costs, positions=positions, progress=False)
    sweep = _all_sweeps(cache, costs, positions)
    for j, budget in enumerate(budgets):
        k, t = _config(result, j)
        limit = prob.max_cost_sum(budget)
        nc, cs = naive_search.counts(prob, k, t)
        fits = [naive_search.counts(prob, kk, tt) for kk, tt in sweep]
        fits = [(a, b) for a, b in fits if b <= limit]
        if result.table["feasible"].iloc[j]:
            assert cs <= limit
            assert result.table["rel_cost"].iloc[j] <= budget + 1e-9
            assert naive_search.constrained_improvement(prob, k, t, allowed, max_cost=limit) is None
            for a, _ in fits:
                assert nc >= a
        else:
            assert cs > limit and not fits


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exit_caches(max_positions=3, max_types=2, max_samples=8, labels="known"),
       st.sampled_from([0.0, 0.05, 0.2]))
def test_exhaustive_target_is_never_beaten(cache, drop):
    prob = Problem(cache)
    assume(prob.n_head_correct > 0)
    allowed = np.asarray(cache.available, bool)
    need = prob.min_correct(drop)
    best = naive_search.exhaustive_target(prob, allowed, min_correct=need)
    got = naive_search.counts(prob, *_config(cheapest(cache, drop, lambdas=LAMBDAS, progress=False)))
    assert got[0] >= need and (got[1], -got[0]) >= (best[1], -best[0])


def _configs(result):
    return [(c.exit_types, c.thresholds) for c in result.configs]


def test_targets_reach_what_no_lambda_reaches_on_a_synthetic_cache():
    # The non-convex parts of the trade-off: at each Table II level the target
    # search is at least as cheap as the best lambda-sweep configuration, and
    # strictly cheaper somewhere.
    cache = synthetic.make_cache("resnet18", n_samples=3000, n_classes=100, seed=1)
    drops = [0.05, 0.02, 0.005]
    result = cheapest(cache, drops, progress=False)
    sweep = run(cache, np.linspace(0, 1, 101), progress=False).table
    gains = []
    for j, drop in enumerate(drops):
        ok = sweep[1 - sweep["rel_accuracy"] <= drop + 1e-12]
        gains.append(ok["rel_cost"].min() - result.table["rel_cost"].iloc[j])
    assert min(gains) >= 0 and max(gains) > 0
    # given cheapest's configurations as starts, most_accurate at their costs is at least as accurate
    back = most_accurate(cache, result.table["rel_cost"].to_list(), starts=result, progress=False)
    assert (back.table["rel_accuracy"].to_numpy() >= result.table["rel_accuracy"].to_numpy() - 1e-12).all()


def test_front_is_non_dominated_and_dominates_the_sweep():
    cache = synthetic.make_cache("resnet18", n_samples=2000, n_classes=100, seed=4)
    fr = front(cache, lambdas=np.linspace(0, 1, 21), progress=False)
    t = fr.table
    assert fr.metadata["method"] == "front"
    assert (np.diff(t["rel_cost"].to_numpy()) >= 0).all() and (np.diff(t["rel_accuracy"].to_numpy()) > 0).all()
    assert set(t["method"]) <= {"descent", "cheapest", "single_pass", "baseline", "iterative", "original model"}
    assert (t["method"] == "cheapest").any()
    assert t.loc[t["method"] == "cheapest", "lambda"].isna().all()
    lambdas = np.linspace(0, 1, 21)
    for method, threshold in (("descent", "exact"), ("single_pass", "exact"), ("single_pass", "bounded"),
                              ("baseline", "exact"), ("iterative", "exact")):
        sweep = run(cache, lambdas, method=method, threshold=threshold, progress=False).table
        for cost, acc in zip(sweep["rel_cost"], sweep["rel_accuracy"]):
            # every configuration of the sweep and its starts is matched or beaten by a front row
            assert ((t["rel_cost"] <= cost + 1e-12) & (t["rel_accuracy"] >= acc - 1e-12)).any(), (method, cost, acc)


def test_infeasible_budget_is_reported_not_hidden():
    cache = synthetic.make_cache("resnet18", n_samples=500, n_classes=10, seed=2)
    result = most_accurate(cache, [1e-6, 0.9], progress=False)
    feasible = result.table["feasible"].to_list()
    assert feasible == [False, True]
    assert result.table["rel_cost"].iloc[0] > 1e-6


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: cheapest(c, 1.0), r"max_drop must be in \[0, 1\)"),
        (lambda c: cheapest(c, [0.1, -0.1]), "at index 1"),
        (lambda c: cheapest(c, "x"), "max_drop must be a number"),
        (lambda c: cheapest(c, []), "non-empty"),
        (lambda c: most_accurate(c, 0.0), r"max_cost must be in \(0, inf\)"),
        (lambda c: most_accurate(c, float("nan")), "max_cost"),
        (lambda c: cheapest(c, 0.1, bisection=-1), "bisection"),
        (lambda c: cheapest(c, 0.1, lambdas=[2.0]), r"\[0, 1\]"),
        (lambda c: front(c, drops=[1.5]), "drops"),
        (lambda c: cheapest(c, 0.1, positions=["nope"]), "unknown position"),
    ],
)
def test_bad_arguments(call, message):
    cache = synthetic.make_cache("resnet18", n_samples=50, n_classes=10)
    with pytest.raises(ValueError, match=message):
        call(cache)


def test_targets_are_thread_count_independent():
    import numba

    cache = synthetic.make_cache("resnet18", n_samples=2000, n_classes=100, seed=3)
    before = numba.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            out.append(cheapest(cache, [0.05, 0.01], lambdas=np.linspace(0, 1, 11), progress=False))
    finally:
        numba.set_num_threads(before)
    assert all(a == b for a, b in zip(out[0].configs, out[1].configs))
    assert math.isclose(out[0].table["rel_cost"].sum(), out[1].table["rel_cost"].sum(), rel_tol=0, abs_tol=0)
