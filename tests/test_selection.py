"""Certified selection on unseen data, splitting a cache, and the exact binomial statistics behind them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dyce_search as ds
from dyce_search import CacheError, ResultError
from dyce_search.selection import fallback_levels
from dyce_search.stats import beta_lower_bound, binomial_interval, binomial_pvalue, upper_bound


# ------------------------------------------------------------------ statistics


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 400), data=st.data(), p0=st.floats(0.0, 1.0))
def test_binomial_pvalue_is_scipys_binomial_test(n, data, p0):
    from scipy.stats import binomtest

    k = data.draw(st.integers(0, n))
    got = binomial_pvalue(k, n, p0)
    if n == 0:
        assert got == 1.0
    else:
        assert got == pytest.approx(binomtest(k, n, p0, alternative="less").pvalue, rel=1e-12, abs=1e-300)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), data=st.data(), confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_intervals_are_scipys_clopper_pearson(n, data, confidence):
    from scipy.stats import binomtest

    k = data.draw(st.integers(0, n))
    from scipy.stats import binom

    ci = binomtest(k, n).proportion_ci(confidence, method="exact")
    low, high = binomial_interval(k, n, confidence)
    # scipy finds the ends by root finding (brentq, absolute xtol 2e-12), ours are the exact Beta
    # quantiles: equal up to scipy's absolute tolerance (relative ~1e-8 where an end is near 1e-5)
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-8, abs=5e-12)
    # exactness itself: each end puts exactly (1 - confidence) / 2 in its tail of Bin(n, p)
    tail = (1 - confidence) / 2
    if k > 0:
        assert binom.sf(k - 1, n, low) == pytest.approx(tail, rel=1e-9)
    if k < n:
        assert binom.cdf(k, n, high) == pytest.approx(tail, rel=1e-9)
    # one-sided bound at 1 - delta: the two-sided interval's upper end at 1 - 2 delta
    delta = (1 - confidence) / 2
    assert upper_bound(k, n, delta) == pytest.approx(ci.high, rel=1e-8, abs=5e-12)
    # and the largest p0 the exact test does not reject at delta
    if k < n:
        b = upper_bound(k, n, delta)
        assert binomial_pvalue(k, n, b) == pytest.approx(delta, rel=1e-6)


def test_beta_lower_bound_is_the_released_codes():
    from scipy.special import betaincinv

    assert beta_lower_bound(90, 10, 0.1) == betaincinv(91, 11, 0.1)
    np.testing.assert_allclose(beta_lower_bound(np.array([0, 5]), np.array([3, 0]), 0.1),
                               betaincinv(np.array([1, 6]), np.array([4, 1]), 0.1))
    with pytest.raises(ValueError, match="alpha"):
        beta_lower_bound(1, 1, 1.5)


def test_statistics_reject_bad_counts():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        binomial_pvalue(5, 3, 0.1)
    with pytest.raises(ValueError, match="p0"):
        binomial_pvalue(1, 3, 1.5)
    with pytest.raises(ValueError, match="delta"):
        upper_bound(1, 3, 0.0)


def test_fallback_procedure_spreads_and_carries_delta():
    p = np.array([0.06, 0.02, 0.04, 0.2, 0.01])
    # fixed sequence: the first p-value above delta stops everything
    assert fallback_levels(p, 0.05, 1).tolist() == [False, False, False, False, False]
    assert fallback_levels(np.array([0.01, 0.04, 0.2, 0.01]), 0.05, 1).tolist() == [True, True, False, False]
    # spread 2: the first is tested at 0.025 (not rejected), the second at 0.025 (rejected),
    # the third at 0 + 0.025 carried (not rejected); nothing is left for the rest
    assert fallback_levels(p, 0.05, 2).tolist() == [False, True, False, False, False]


# ----------------------------------------------------------------------- split


def test_split_parts_are_disjoint_named_and_traceable():
    cache = ds.synthetic.make_cache("resnet18", n_samples=1000, n_classes=10, seed=1)
    parts = ds.split(cache, (0.5, 0.25, 0.25), seed=3)
    assert [p.n_samples for p in parts] == [500, 250, 250]
    assert [p.metadata["split"] for p in parts] == ["val/search", "val/validation", "val/test"]
    ids = [set(p.sample.tolist()) for p in parts]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == set(cache.sample.tolist())
    provenance = parts[1].metadata["split_from"]
    assert provenance == {"samples": cache.samples_digest, "seed": 3, "fractions": [0.5, 0.25, 0.25],
                          "part": "validation"}
    again = ds.split(cache, (0.5, 0.25, 0.25), seed=3)
    assert all(a.equals(b) for a, b in zip(parts, again))
    # a part survives a round trip through Parquet with its provenance
    assert len({p.samples_digest for p in parts}) == 3


@pytest.mark.parametrize("fractions, sizes", [((0.3, 0.3), [30, 30]), ((1 / 3,) * 3, [33, 33, 34]),
                                             ((0.25, 0.75), [25, 75])])
def test_split_sizes(fractions, sizes):
    cache = ds.synthetic.make_cache("resnet18", n_samples=100, n_classes=10)
    got = [p.n_samples for p in ds.split(cache, fractions, seed=0, names=[f"p{i}" for i in range(len(fractions))])]
    assert sorted(got) == sorted(sizes) and sum(got) == sum(sizes)


@pytest.mark.parametrize("fractions, message", [((0.6, 0.6), "sum to at most 1"), ((0.5, 0.0), r"\(0, 1\]"),
                                                ((0.001, 0.5), "leaves a part empty"), ("x", "numbers")])
def test_split_rejects_bad_fractions(fractions, message):
    cache = ds.synthetic.make_cache("resnet18", n_samples=100, n_classes=10)
    with pytest.raises(ValueError, match=message):
        ds.split(cache, fractions)


# ---------------------------------------------------------------------- select


@pytest.fixture(scope="module")
def searched():
    population = ds.synthetic.make_cache("resnet18", n_samples=6000, n_classes=100, seed=5)
    search, validation, test = ds.split(population, (0.4, 0.3, 0.3), seed=0)
    front = ds.front(search, lambdas=np.linspace(0, 1, 11), progress=False)
    return search, validation, test, front


def test_select_certifies_the_cheapest_candidate_the_sequence_reaches(searched):
    from dyce_search.evaluation import simulate

    search, validation, test, front = searched
    result = ds.select(front, validation, [0.02, 0.05, 0.2], delta=0.1)
    table = result.table
    assert table["target"].tolist() == [0.02, 0.05, 0.2] and table["certified"].all()
    assert result.metadata["method"] == "select" and result.metadata["delta"] == 0.1
    # recompute the procedure by hand: most to least expensive on the search split, exact p-values
    ft = front.table
    order = np.lexsort((np.arange(len(ft)), -ft["rel_accuracy"].to_numpy(), -ft["rel_cost"].to_numpy()))
    head_right = validation.final_pred == validation.label
    for row, config in zip(table.itertuples(), result.configs):
        chosen = None
        for i in order:
            pred = simulate(validation, front.configs[i]).pred
            k = int(np.count_nonzero(head_right & (pred != validation.label)))
            if binomial_pvalue(k, int(head_right.sum()), row.target) > 0.1:
                break
            chosen = i
        if chosen is None:
            assert row.fallback and not config.enabled.any()
        else:
            assert not row.fallback and config == front.configs[chosen]
            assert row.risk_bound <= row.target < 1
    # looser targets never cost more
    assert (np.diff(table["rel_cost"].to_numpy()) <= 1e-12).all()


def test_select_falls_back_to_the_head_when_nothing_is_certified(searched):
    _, validation, _, front = searched
    result = ds.select(front, validation, 0.0)  # no drop at all can never be certified by a test
    row = result.table.iloc[0]
    assert row["fallback"] and row["certified"] and row["rel_cost"] == 1.0 and row["validation_rel_cost"] == 1.0
    assert not result.configs[0].enabled.any()


def test_select_refuses_the_search_split_and_its_own_part(searched):
    search, validation, _, front = searched
    with pytest.raises(ResultError, match="exactly the samples the candidates were searched on"):
        ds.select(front, search, 0.05)
    # the same part made again from the same split is the same samples
    again = ds.split(ds.synthetic.make_cache("resnet18", n_samples=6000, n_classes=100, seed=5), (0.4, 0.3, 0.3),
                     seed=0)[0]
    with pytest.raises(ResultError, match="searched on"):
        ds.select(front, again, 0.05)


def test_select_arguments(searched, tmp_path):
    _, validation, _, front = searched
    for kwargs, message in (({"delta": 0}, "delta"), ({"risk": "nope"}, "risk"), ({"spread": 0}, "spread")):
        with pytest.raises(ValueError, match=message):
            ds.select(front, validation, 0.05, **kwargs)
    with pytest.raises(ValueError, match="max_drop"):
        ds.select(front, validation, 1.0)
    unlabelled = validation.take(np.arange(validation.n_samples))
    from dataclasses import replace

    unlabelled = replace(unlabelled, label=np.full(unlabelled.n_samples, -1, np.int32))
    with pytest.raises(CacheError, match="risk='agreement'"):
        ds.select(front, unlabelled, 0.05)
    assert ds.select(front, unlabelled, 0.05, risk="agreement").table["certified"].all()
    path = tmp_path / "selected.json"
    ds.select(front, validation, [0.05, 0.2]).save(path)
    loaded = ds.load_result(path)
    assert loaded.metadata["risk"] == "accuracy" and loaded.table["certified"].all()


def test_select_holds_on_unseen_data_within_binomial_noise():
    # A large population stands in for unseen data: its drop is the true risk. Over many
    # search/validation draws, the certified configuration's true risk exceeds max_drop in at
    # most delta of them (plus binomial noise).
    population = ds.synthetic.make_cache("resnet18", n_samples=40_000, n_classes=100, seed=11)
    rng = np.random.default_rng(0)
    head_right = population.final_pred == population.label
    delta, targets, draws = 0.2, (0.05, 0.1), 20
    violations = np.zeros(len(targets))
    from dyce_search.evaluation import simulate

    for _ in range(draws):
        idx = rng.permutation(population.n_samples)
        search = population.take(np.sort(idx[:1500]))
        validation = population.take(np.sort(idx[1500:2500]))
        front = ds.front(search, lambdas=np.linspace(0, 1, 6), progress=False)
        result = ds.select(front, validation, list(targets), delta=delta)
        for j, config in enumerate(result.configs):
            pred = simulate(population, config).pred
            true_risk = np.count_nonzero(head_right & (pred != population.label)) / head_right.sum()
            violations[j] += true_risk > targets[j]
    from scipy.stats import binom

    # the violation count is at most Bin(draws, delta); allow its 99.9 % quantile
    assert (violations <= binom.ppf(0.999, draws, delta)).all(), violations


def test_select_coverage_over_200_validation_draws():
    """P(true drop > max_drop) <= delta over 200 validation draws, and a plug-in choice fails the same check.

    The candidates are searched once; each draw is a fresh validation sample of
    the same synthetic model and the truth is measured on 100,000 other samples,
    so the certified drop's violation count is at most Bin(200, delta).
    """
    from scipy.stats import binom

    from dyce_search.evaluation import simulate

    make = ds.synthetic.make_cache
    search = make("resnet18", n_samples=3000, n_classes=100, seed=1)
    truth = make("resnet18", n_samples=100_000, n_classes=100, seed=2)
    front = ds.front(search, lambdas=np.linspace(0, 1, 11), progress=False)
    head_right = truth.final_pred == truth.label
    true_harm = np.array([np.count_nonzero(head_right & (simulate(truth, c).pred != truth.label))
                          for c in front.configs]) / head_right.sum()
    true_drop = 1.0 - front.evaluate(truth)["rel_accuracy"].to_numpy()
    delta, targets, draws = 0.1, (0.04, 0.06), 200
    violated = np.zeros(len(targets), int)
    plug_in_violated = np.zeros(len(targets), int)
    certified = np.zeros(len(targets), int)
    for seed in range(draws):
        validation = make("resnet18", n_samples=1000, n_classes=100, seed=100 + seed)
        result = ds.select(front, validation, list(targets), delta=delta)
        v_right = validation.final_pred == validation.label
        v_harm = np.array([np.count_nonzero(v_right & (simulate(validation, c).pred != validation.label))
                           for c in front.configs]) / v_right.sum()
        cost = front.table["rel_cost"].to_numpy()
        for j, (target, config, row) in enumerate(zip(targets, result.configs, result.table.itertuples())):
            if not row.fallback:
                i = next(i for i, c in enumerate(front.configs) if c == config)
                certified[j] += 1
                violated[j] += true_drop[i] > target
                assert true_harm[i] >= true_drop[i] - 1e-12  # the harm rate bounds the drop
            ok = np.flatnonzero(v_harm <= target)  # plug-in: the validation estimate taken at face value
            if ok.size:
                plug_in_violated[j] += true_harm[ok[np.argmin(cost[ok])]] > target
    limit = binom.ppf(0.999, draws, delta)
    assert (violated <= limit).all(), (violated, limit)
    # the check has teeth: something is certified in most draws, and ignoring the sampling noise fails it
    assert (certified >= draws // 2).all(), (certified, violated, plug_in_violated)
    assert (plug_in_violated > limit).any(), plug_in_violated
