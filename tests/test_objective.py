"""Objective: Eq. 12 on the paper's and the released code's scale as affine coefficients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dyce_search.config import Config
from dyce_search.costs import Costs
from dyce_search.evaluation import evaluate
from dyce_search.objective import Objective, check_lambda, reference_labels

from tests import naive
from tests.strategies import configs, exit_caches, random_costs

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.data())
def test_coefficients_reproduce_naive_f(data):
    cache = data.draw(exit_caches())
    config = data.draw(configs(cache))
    costs = data.draw(st.one_of(st.none(), random_costs(cache)))
    kind = data.draw(st.sampled_from(["paper", "normalized"]))
    lam = data.draw(st.floats(0, 1))
    seg = None if costs is None else list(costs.segment)
    exc = None if costs is None else costs.exit.tolist()
    obj = Objective.build(kind, cache, costs)
    k, t = config.exit_types, config.thresholds
    ev = evaluate(cache, config, costs)  # n_correct and cost_sum
    try:
        a0, a_correct, a_cost = obj.coefficients(lam)
    except ValueError as e:
        assert "undefined" in str(e)
        return
    f = a0 + a_correct * ev.n_correct + a_cost * ev.cost_sum
    reference = (naive.f_paper if kind == "paper" else naive.f_normalized)(cache, k, t, lam, seg, exc)
    assert f == pytest.approx(reference, rel=1e-9, abs=1e-9)
    assert obj.value(lam, ev.n_correct, ev.cost_sum) == pytest.approx(f, rel=1e-12, abs=1e-12)
    assert obj.rel_accuracy(ev.n_correct) == pytest.approx(naive.A(cache, k, t), rel=1e-12)
    assert obj.rel_cost(ev.cost_sum) == pytest.approx(naive.C(cache, k, t, seg, exc), rel=1e-12)


@SETTINGS
@given(exit_caches(labels="known"))
def test_paper_scale_end_points(cache):
    obj = Objective.paper(cache)
    empty = evaluate(cache, Config.empty(cache.n_positions))
    if obj.head_accuracy == 0:
        return
    # the original model: A = 1, C = 1 -> f = 1 - lambda
    for lam in (0.0, 0.3, 1.0):
        assert obj.value(lam, empty.n_correct, empty.cost_sum) == pytest.approx(1 - lam)
    assert obj.head_accuracy == naive.A_ori(cache)
    assert obj.labels_known


@SETTINGS
@given(exit_caches())
def test_normalized_scale_end_points(cache):
    obj = Objective.normalized(cache)
    empty = evaluate(cache, Config.empty(cache.n_positions))
    try:
        obj.check_defined()
    except ValueError:
        return
    # the original model on the normalised scale: acc' = 1, C' = 1 -> f = 1 - lambda
    for lam in (0.0, 0.5, 1.0):
        assert obj.value(lam, empty.n_correct, empty.cost_sum) == pytest.approx(1 - lam, abs=1e-12)
    # a model as accurate as the first exit at the first position's cost: acc' = 0, C' = 0
    a_min_correct = obj.min_accuracy * obj.n_samples
    assert obj.value(0.5, a_min_correct, obj.min_cost * obj.n_samples) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("bad", [np.nan, -1e-9, 1.0000001, float("inf"), "a", None])
def test_lambda_validation(bad):
    with pytest.raises(ValueError, match="lambda"):
        check_lambda(bad)


def _cache(label, final_pred, pred0=None, available=True):
    from dyce_search.cache import ExitCache

    M = len(label)
    pred0 = final_pred if pred0 is None else pred0
    return ExitCache(
        label=np.array(label, np.int32),
        pred=np.array(pred0, np.int32).reshape(1, 1, M),
        conf=np.full((1, 1, M), 0.5, np.float32),
        final_pred=np.array(final_pred, np.int32),
        final_conf=np.ones(M, np.float32),
        backbone_macs=np.array([10]),
        exit_macs=np.array([[2]]),
        available=np.array([[available]]),
        total_macs=40,
        positions=("a",),
        exit_types=("t",),
        sample=np.arange(M),
        num_classes=3,
    )


def test_unknown_labels_mean_agreement_with_the_head():
    cache = _cache([0, -1, 2], [1, 1, 2])
    truth, known = reference_labels(cache)
    assert not known and truth.tolist() == [1, 1, 2]
    obj = Objective.paper(cache)
    assert obj.head_accuracy == 1.0 and not obj.labels_known


def test_undefined_objectives_raise_on_use_only():
    never_right = _cache([0, 0], [1, 1], pred0=[0, 1])
    obj = Objective.paper(never_right)
    assert np.isnan(obj.rel_accuracy(1))
    with pytest.raises(ValueError, match="A_ori is 0"):
        obj.coefficients(0.5)
    # the first exit as accurate as the head: the normalised accuracy has no span
    same = _cache([0, 1], [0, 1], pred0=[0, 1])
    with pytest.raises(ValueError, match="a_min"):
        Objective.normalized(same).coefficients(0.5)
    no_exit = _cache([0, 1], [0, 1], available=False)
    with pytest.raises(ValueError, match="no available exit"):
        Objective.normalized(no_exit).coefficients(0.5)
    with pytest.raises(ValueError, match="objective must be one of"):
        Objective.build("fancy", same)
    with pytest.raises(ValueError, match="objective must be one of"):
        Objective("fancy", 1, 1.0, 1.0)


def test_normalized_uses_first_exit_and_first_segment():
    cache = _cache([0, 1, 2, 0], [0, 1, 2, 1], pred0=[0, 0, 0, 0])
    obj = Objective.normalized(cache)
    assert obj.min_accuracy == 0.5 and obj.head_accuracy == 0.75
    assert obj.min_cost == 10 and obj.total_cost == 40
    costs = Costs([3.0, 1.0], [[0.5]], unit="ms")
    obj = Objective.normalized(cache, costs)
    assert obj.min_cost == 3.0 and obj.total_cost == 4.0
    a0, a_correct, a_cost = obj.coefficients(0.25)
    # f = 0.25 (1 - (acc - 0.5) / 0.25) + 0.75 (mean_cost - 3) / 1
    acc, mean_cost = 0.75, 3.5
    expected = 0.25 * (1 - (acc - 0.5) / 0.25) + 0.75 * (mean_cost - 3) / 1
    assert a0 + a_correct * acc * 4 + a_cost * mean_cost * 4 == pytest.approx(expected)
