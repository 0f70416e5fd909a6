"""evaluate / simulate against the plain-loop references of Eq. 4-12 (tests/naive.py)."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dyce_search import CostError, ResultError
from dyce_search._kernels.metrics import BLOCK
from dyce_search.cache import ExitCache
from dyce_search.config import Config
from dyce_search.costs import Costs
from dyce_search.evaluation import Evaluation, as_config, evaluate, simulate

from tests import naive
from tests.strategies import configs, exit_caches, random_cache, random_config, random_costs

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tiny_cache(conf, pred, label, final_pred, available=None, exit_macs=None, backbone_macs=None, total_macs=None):
    """A cache from explicit [P, K, M] arrays (test helper)."""
    conf = np.asarray(conf, np.float32)
    P, K, M = conf.shape
    available = np.ones((P, K), bool) if available is None else np.asarray(available, bool)
    return ExitCache(
        label=np.asarray(label, np.int32),
        pred=np.asarray(pred, np.int32),
        conf=conf,
        final_pred=np.asarray(final_pred, np.int32),
        final_conf=np.ones(M, np.float32),
        backbone_macs=np.arange(1, P + 1, dtype=np.int64) * 10 if backbone_macs is None else np.asarray(backbone_macs),
        exit_macs=np.ones((P, K), np.int64) if exit_macs is None else np.asarray(exit_macs, np.int64),
        available=available,
        total_macs=(P + 1) * 10 if total_macs is None else total_macs,
        positions=tuple(f"p{i}" for i in range(P)),
        exit_types=tuple(f"k{i}" for i in range(K)),
        sample=np.arange(M, dtype=np.int64),
        num_classes=int(max(np.max(pred), np.max(final_pred), np.max(label)) + 1),
    )


def _check_against_naive(cache, config, costs=None):
    k, t = config.exit_types, config.thresholds
    seg = None if costs is None else list(costs.segment)
    exc = None if costs is None else costs.exit.tolist()
    lam = 0.37
    if naive.A_ori(cache) == 0:  # the head is never right: A and f are undefined
        with pytest.raises(ValueError, match="A_ori is 0"):
            evaluate(cache, config, costs, lam=lam)
        ev = evaluate(cache, config, costs)
        assert np.isnan(ev.rel_accuracy) and ev.objective is None
        assert ev.exits.tolist() == naive.E(cache, k, t)
        assert ev.rel_cost == pytest.approx(naive.C(cache, k, t, seg, exc), rel=1e-12, abs=1e-15)
        return ev
    ev = evaluate(cache, config, costs, lam=lam)
    assert ev.exits.dtype == np.int64 and ev.exits.shape == (cache.n_positions + 1,)
    assert ev.exits.tolist() == naive.E(cache, k, t)
    assert ev.exits_correct.tolist() == naive.EC(cache, k, t)
    np.testing.assert_array_equal(ev.position_accuracy, np.array(naive.A_n(cache, k, t)))
    assert ev.rel_accuracy == pytest.approx(naive.A(cache, k, t), rel=1e-12, abs=1e-15)
    assert ev.rel_cost == pytest.approx(naive.C(cache, k, t, seg, exc), rel=1e-12, abs=1e-15)
    with pytest.warns(DeprecationWarning, match="rel_macs is renamed rel_cost"):
        assert ev.rel_macs == ev.rel_cost
    with pytest.warns(DeprecationWarning, match="macs is renamed cost"):
        assert ev.macs == ev.cost == ev.mean_cost
    assert ev.objective == pytest.approx(naive.f_paper(cache, k, t, lam, seg, exc), rel=1e-12, abs=1e-12)
    total = float(np.sum(costs.segment)) if costs is not None else float(cache.total_macs)
    assert ev.cost == pytest.approx(ev.rel_cost * total, rel=1e-12, abs=1e-12)
    assert ev.cost_sum == pytest.approx(ev.cost * cache.n_samples, rel=1e-12)
    assert ev.n_correct == sum(naive.EC(cache, k, t))
    assert ev.accuracy == ev.n_correct / cache.n_samples
    assert ev.labels_known == all(int(v) >= 0 for v in cache.label)
    return ev


@SETTINGS
@given(st.data())
def test_evaluate_matches_naive_with_macs(data):
    cache = data.draw(exit_caches())
    _check_against_naive(cache, data.draw(configs(cache)))


@SETTINGS
@given(st.data())
def test_evaluate_matches_naive_with_random_costs(data):
    cache = data.draw(exit_caches())
    costs = data.draw(random_costs(cache))
    ev = _check_against_naive(cache, data.draw(configs(cache)), costs)
    assert ev.unit == "ms"


@SETTINGS
@given(st.data())
def test_evaluate_normalized_objective_matches_naive(data):
    cache = data.draw(exit_caches())
    config = data.draw(configs(cache))
    lam = data.draw(st.floats(0, 1))
    k, t = config.exit_types, config.thresholds
    try:
        ev = evaluate(cache, config, objective="normalized", lam=lam)
    except ValueError as e:  # A_ori = 0, a_min >= A_ori or no exit at all: undefined scale
        assert "undefined" in str(e)
        return
    assert ev.objective_kind == "normalized"
    assert ev.objective == pytest.approx(naive.f_normalized(cache, k, t, lam), rel=1e-9, abs=1e-9)


@SETTINGS
@given(st.data())
def test_simulate_matches_naive_and_evaluate(data):
    cache = data.draw(exit_caches())
    config = data.draw(configs(cache))
    costs = data.draw(st.one_of(st.none(), random_costs(cache)))
    seg = None if costs is None else list(costs.segment)
    exc = None if costs is None else costs.exit.tolist()
    sim = simulate(cache, config, costs)
    position, pred, correct, cost = naive.simulate(cache, config.exit_types, config.thresholds, seg, exc)
    assert sim.position.dtype == np.int32 and sim.pred.dtype == np.int32
    assert sim.correct.dtype == np.bool_ and sim.cost.dtype == np.float64
    assert sim.position.tolist() == position
    assert sim.pred.tolist() == pred
    assert sim.correct.tolist() == correct
    np.testing.assert_allclose(sim.cost, cost, rtol=1e-12)
    ev = evaluate(cache, config, costs)
    assert np.bincount(sim.position, minlength=cache.n_positions + 1).tolist() == ev.exits.tolist()
    assert int(sim.correct.sum()) == ev.n_correct
    assert sim.cost.sum() == pytest.approx(ev.cost_sum, rel=1e-12)


@SETTINGS
@given(st.data())
def test_single_sample_caches(data):
    cache = data.draw(exit_caches(max_samples=1))
    assert cache.n_samples == 1
    _check_against_naive(cache, data.draw(configs(cache)))


@SETTINGS
@given(st.data())
def test_ties_on_the_grid(data):
    """Thresholds drawn from the same grid as the confidences: exact ties everywhere."""
    cache = data.draw(exit_caches())
    _check_against_naive(cache, data.draw(configs(cache, threshold_grid=True)))


def test_threshold_is_greater_or_equal_in_float64():
    c32 = np.float32(0.1)  # 0.100000001490116...
    conf = np.full((1, 1, 3), c32)
    cache = tiny_cache(conf, np.zeros((1, 1, 3)), [0, 0, 0], [0, 0, 0])
    exact = float(c32)
    for t, leaves in ((exact, True), (0.1, True), (np.nextafter(exact, 1.0), False), (np.nextafter(exact, 0.0), True)):
        ev = evaluate(cache, (np.array([0]), np.array([t])))
        assert ev.exits.tolist() == ([3, 0] if leaves else [0, 3]), t


def test_hand_computed_example():
    # P=2, K=1, M=4; positions' confidences and predictions per sample
    conf = [[[0.9, 0.5, 0.2, 0.6]], [[0.1, 0.8, 0.3, 0.7]]]
    pred = [[[0, 1, 0, 0]], [[0, 1, 1, 1]]]
    label = [0, 1, 1, 0]
    final = [0, 1, 1, 1]
    # MACs: cumulative backbone 10, 20; total 30 -> S = 1/3 each; exits 3 MACs -> Delta 0.1
    cache = tiny_cache(conf, pred, label, final, exit_macs=[[3], [3]])
    ev = evaluate(cache, Config(np.array([0, 0]), np.array([0.6, 0.7])), lam=0.5)
    # sample 0 and 3 leave at position 0 (0.9, 0.6 >= 0.6), sample 1 at position 1 (0.8), sample 2 at the head
    assert ev.exits.tolist() == [2, 1, 1]
    assert ev.exits_correct.tolist() == [2, 1, 1]  # the early exit is right on sample 3 where the head is wrong
    np.testing.assert_allclose(ev.position_accuracy, [1.0, 1.0, 1.0])
    # A_ori = 3/4 (head wrong on sample 3); A = 4 / (4 * 0.75) > 1
    assert ev.rel_accuracy == pytest.approx(4 / 3)
    assert ev.accuracy == 1.0
    # costs in MACs: exit@0 = 10 + 3, exit@1 = 20 + 6, head = 30 + 6
    assert ev.cost_sum == pytest.approx(2 * 13 + 26 + 36)
    assert ev.rel_cost == pytest.approx(88 / (4 * 30))
    assert ev.objective == pytest.approx(0.5 * (1 - 4 / 3) + 0.5 * 88 / 120)
    sim = simulate(cache, Config(np.array([0, 0]), np.array([0.6, 0.7])))
    assert sim.position.tolist() == [0, 1, 2, 0]
    assert sim.pred.tolist() == [0, 1, 1, 0]
    assert sim.cost.tolist() == [13.0, 26.0, 36.0, 13.0]


def test_empty_config_is_the_original_model():
    cache = tiny_cache([[[0.9, 0.9]]], [[[0, 0]]], [0, 1], [0, 1])
    ev = evaluate(cache, Config.empty(1), lam=0.25)
    assert ev.exits.tolist() == [0, 2]
    assert np.isnan(ev.position_accuracy[0])
    assert ev.rel_accuracy == 1.0 and ev.rel_cost == 1.0
    assert ev.objective == pytest.approx(0.75)


def test_threshold_above_one_never_exits_but_costs_its_exit():
    cache = tiny_cache([[[1.0, 1.0]]], [[[0, 0]]], [0, 0], [0, 0], exit_macs=[[5]])
    ev = evaluate(cache, (np.array([0]), np.array([1.5])))
    assert ev.exits.tolist() == [0, 2]
    assert ev.cost == 20 + 5  # total 20 plus the exit every sample ran
    ev = evaluate(cache, (np.array([0]), np.array([-3.0])))
    assert ev.exits.tolist() == [2, 0]


def test_unknown_labels_measure_agreement_with_the_head():
    cache = tiny_cache([[[0.9, 0.9, 0.1]]], [[[0, 1, 1]]], [-1, 1, 0], [0, 0, 1])
    ev = evaluate(cache, (np.array([0]), np.array([0.5])))
    assert not ev.labels_known
    # agreement with the head: sample 0 (0 == 0) yes, sample 1 (1 vs 0) no, sample 2 goes to the head: yes
    assert ev.exits_correct.tolist() == [1, 1]
    assert ev.rel_accuracy == pytest.approx(2 / 3)
    assert evaluate(cache, Config.empty(1)).rel_accuracy == 1.0


def test_config_validation_names_the_position():
    cache = tiny_cache(
        np.full((2, 2, 3), 0.5), np.zeros((2, 2, 3)), [0, 0, 0], [0, 0, 0], available=[[True, False], [True, True]]
    )
    with pytest.raises(ResultError, match="3 positions, the cache has 2"):
        evaluate(cache, Config.empty(3))
    with pytest.raises(ResultError, match=r"index 2 at position 1 \('p1'\)"):
        evaluate(cache, (np.array([-1, 2]), np.array([0.0, 0.5])))
    with pytest.raises(ResultError, match=r"'k1' is not available at position 0 \('p0'\)"):
        evaluate(cache, (np.array([1, -1]), np.array([0.5, 0.0])))
    with pytest.raises(ResultError, match=r"threshold at position 1 \('p1'\) must be finite"):
        simulate(cache, (np.array([0, 0]), np.array([0.5, np.inf])))
    with pytest.raises(ResultError, match="every enabled position needs a threshold"):
        evaluate(cache, (np.array([0, 0]), np.array([0.5, np.nan])))
    with pytest.raises(ResultError, match="Config or an"):
        evaluate(cache, "nonsense")
    # disabled positions ignore their threshold
    assert as_config(cache, (np.array([-1, 0]), np.array([np.inf, 0.5]))).thresholds[0] != 0


def test_lambda_and_costs_validation():
    cache = tiny_cache([[[0.5]]], [[[0]]], [0], [0])
    for bad in (np.nan, -0.01, 1.01, "x"):
        with pytest.raises(ValueError, match="lambda"):
            evaluate(cache, Config.empty(1), lam=bad)
    wrong = Costs(np.ones(3), np.ones((2, 1)))
    with pytest.raises(CostError, match="2 positions"):
        evaluate(cache, Config.empty(1), wrong)
    with pytest.raises(TypeError):
        evaluate(cache, Config.empty(1), costs="macs")
    with pytest.raises(ValueError, match="objective"):
        evaluate(cache, Config.empty(1), objective="other")
    from dyce_search.objective import Objective

    other = tiny_cache([[[0.5, 0.5]]], [[[0, 0]]], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="built for 2 samples"):
        evaluate(cache, Config.empty(1), objective=Objective.paper(other))


def test_scaled_costs_keep_relative_cost():
    """A latency profile proportional to MACs gives the same C and a scaled mean cost."""
    rng = np.random.default_rng(3)
    conf = rng.random((3, 2, 50))
    cache = tiny_cache(conf, rng.integers(0, 3, (3, 2, 50)), rng.integers(0, 3, 50), rng.integers(0, 3, 50))
    macs = Costs.from_cache(cache)
    ms = Costs(macs.segment * 2.5e-3, macs.exit * 2.5e-3, unit="ms")
    config = Config(np.array([0, 1, -1]), np.array([0.7, 0.4, np.nan]))
    a, b = evaluate(cache, config, macs, lam=0.3), evaluate(cache, config, ms, lam=0.3)
    assert b.unit == "ms" and a.unit == "macs"
    assert b.rel_cost == pytest.approx(a.rel_cost, rel=1e-12)
    assert b.cost == pytest.approx(a.cost * 2.5e-3, rel=1e-12)
    assert b.objective == pytest.approx(a.objective, rel=1e-12)


def test_results_do_not_depend_on_thread_count():
    """Several blocks of samples: counts and the float cost sum are bit-identical for 1 and 2 threads."""
    from dyce_search.evaluation import _small

    rng = np.random.default_rng(11)
    M = 22 * BLOCK + 17
    P, K = 6, 3
    conf = rng.random((P, K, M)).astype(np.float32)
    cache = tiny_cache(conf, rng.integers(0, 5, (P, K, M)), rng.integers(0, 5, M), rng.integers(0, 5, M))
    config = Config(np.array([0, 1, 2, 1, 0, 0]), np.array([0.95, 0.99, 0.9, 0.97, 0.3, 0.5]))
    assert not _small(M, 6)  # the parallel kernel runs
    costs = Costs(rng.random(P + 1) + 0.1, rng.random((P, K)), unit="ms")
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            runs.append((evaluate(cache, config, costs, lam=0.4), simulate(cache, config, costs)))
    finally:
        numba.set_num_threads(before)
    (e1, s1), (e2, s2) = runs[0], runs[-1]
    assert e1.exits.tolist() == e2.exits.tolist()
    assert e1.exits_correct.tolist() == e2.exits_correct.tolist()
    assert e1.cost_sum == e2.cost_sum and e1.objective == e2.objective
    assert np.array_equal(s1.position, s2.position) and np.array_equal(s1.cost, s2.cost)
    assert isinstance(e1, Evaluation)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_blocks=st.integers(1, 4), p_enable=st.sampled_from([0.3, 1.0]))
def test_parallel_and_serial_kernels_agree(seed, n_blocks, p_enable):
    from dyce_search._kernels.metrics import exit_counts, exit_counts_serial, exit_trace, exit_trace_serial
    from dyce_search.evaluation import float32_thresholds

    rng = np.random.default_rng(seed)
    M = int(rng.integers((n_blocks - 1) * BLOCK + 1, n_blocks * BLOCK + 1))
    cache = random_cache(rng, P=4, K=2, M=M, tie_grid=bool(rng.integers(0, 2)))
    config = random_config(rng, cache, p_enable=p_enable)
    on = np.flatnonzero(config.enabled)
    args = (
        cache.conf,
        cache.pred,
        cache.final_pred,
        cache.label,
        on.astype(np.int64),
        config.exit_types[on],
        float32_thresholds(config.thresholds[on]),
    )
    a, b = exit_counts(*args), exit_counts_serial(*args)
    assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
    assert int(a[0].sum()) == M
    slot_cost = np.arange(on.size + 1, dtype=np.float64)
    trace, trace_serial = exit_trace(*args, slot_cost), exit_trace_serial(*args, slot_cost)
    for x, y in zip(trace, trace_serial):
        np.testing.assert_array_equal(x, y)
    assert np.bincount(trace[0], minlength=on.size + 1).tolist() == a[0].tolist()


def test_naive_agrees_on_a_multi_block_cache():
    rng = np.random.default_rng(7)
    cache = random_cache(rng, P=3, K=2, M=BLOCK + 300, tie_grid=True)
    _check_against_naive(cache, random_config(rng, cache, p_enable=1.0, source=1))
    _check_against_naive(cache, random_config(rng, cache, p_enable=0.5))


@settings(max_examples=200, deadline=None)
@given(
    t=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(0, 1),
        st.floats(0, 1, width=32).map(float),
        st.floats(0, 1, width=32).map(lambda v: float(np.nextafter(np.float64(v), 2.0))),
        st.floats(0, 1, width=32).map(lambda v: float(np.nextafter(np.float64(v), -1.0))),
    ),
    c=st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=20),
)
def test_float32_thresholds_compare_like_float64(t, c):
    from dyce_search.evaluation import float32_thresholds

    (t32,) = float32_thresholds([t])
    c = np.array(c + [np.float32(t) if abs(t) < 3e38 else 0.0], np.float32)
    assert t32.dtype == np.float32
    np.testing.assert_array_equal(c >= t32, c.astype(np.float64) >= t)
