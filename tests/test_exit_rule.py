"""The exit rule (dyce_search.exit_rule) is one rule: recording, simulation, search kernels and run time agree.

The adversarial thresholds sit exactly on a recorded confidence c, one float64
ulp above or below it, and halfway between c and its float32 neighbours: the
places where a second encoding of the rule (a float32 threshold rounded to
nearest, a strict comparison, a confidence computed another way) would
decide differently.
"""

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dyce_search import exit_rule
from dyce_search.config import Config
from dyce_search.exit_rule import float32_threshold, float32_thresholds, leaves

torch = pytest.importorskip("torch")

from test_runtime import INPUT_SIZE, NUM_CLASSES, record_cache, tiny_model  # noqa: E402

ADVERSARIAL = ("equal", "ulp64 above", "ulp64 below", "half float32 step above", "half float32 step below")


def adversarial_thresholds(c32) -> dict:
    """float64 thresholds around one float32 confidence (name -> t)."""
    c = float(c32)
    up = float(np.nextafter(np.float32(c32), np.float32(np.inf)))
    down = float(np.nextafter(np.float32(c32), np.float32(-np.inf)))
    return {
        "equal": c,
        "ulp64 above": float(np.nextafter(c, np.inf)),
        "ulp64 below": float(np.nextafter(c, -np.inf)),
        # exact in float64 (two float32 values add exactly); round-to-nearest ties go to the even neighbour
        "half float32 step above": (c + up) / 2,
        "half float32 step below": (c + down) / 2,
    }


# ------------------------------------------------------------- the definition
@settings(max_examples=300, deadline=None)
@given(
    c=st.floats(0, 1, width=32),
    t=st.one_of(st.floats(-1, 2, allow_nan=False), st.floats(0, 1, width=32).map(float)),
    where=st.sampled_from(ADVERSARIAL),
)
def test_float32_form_decides_as_the_rule(c, t, where):
    """Both forms of the rule, in numpy and in torch, for any threshold and around every float32."""
    c32 = np.float32(c)
    for t in (t, adversarial_thresholds(np.float32(t))[where]):
        expected = float(c32) >= t  # the paper's max(y~) >= t_n on the recorded value
        t32 = float32_threshold(t)
        assert float(np.float32(t32)) == t32  # exactly representable: no rounding when compared
        assert bool(leaves(np.array([c32]), t)[0]) == expected
        assert bool(c32 >= float32_thresholds([t])[0]) == expected
        assert bool(torch.tensor([c32]) >= t32) == expected


def test_float32_thresholds_beyond_the_float32_range_and_nan_confidences():
    t = np.array([1e300, -1e300, np.inf, -np.inf, 0.0, -0.0])
    t32 = float32_thresholds(t)
    assert t32.dtype == np.float32 and t32.flags.c_contiguous
    conf = np.array([np.nan, 0.0, 1.0, np.finfo(np.float32).max, -np.finfo(np.float32).max], np.float32)
    for ti, t32i in zip(t, t32):
        np.testing.assert_array_equal(conf >= t32i, leaves(conf, ti))
    assert not leaves(np.array([np.nan], np.float32), -np.inf)[0]  # a NaN confidence never leaves


def test_rule_refuses_what_it_does_not_define():
    with pytest.raises(ValueError, match="NaN"):
        float32_threshold(float("nan"))
    with pytest.raises(TypeError, match="float32"):
        leaves(np.array([0.5]), 0.5)  # float64 confidences are not what is recorded
    assert exit_rule.CONFIDENCE_DTYPE == np.float32


def test_one_definition_is_imported_everywhere():
    """No second encoding: every user imports the rule's objects (a copy would drift)."""
    import dyce_search.evaluation
    import extract.latency
    import extract.record
    import extract.runtime

    assert dyce_search.evaluation.float32_thresholds is exit_rule.float32_thresholds
    assert extract.runtime.float32_threshold is exit_rule.float32_threshold
    assert extract.record.top1 is extract.runtime.top1
    # the profiler imports torch (and with it the rule) only when it times something
    assert "from .runtime import exit_step" in inspect.getsource(extract.latency.measure_latency)
    for name in ("exit_confidence", "threshold_float32"):
        assert not hasattr(extract.runtime, name), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_confidence_is_the_float32_softmax_maximum(dtype):
    from extract.runtime import top1

    logits = (torch.randn(300, 7, generator=torch.Generator().manual_seed(0)) * 6).to(dtype)
    pred, conf = top1(logits)
    assert conf.dtype == torch.float32 and pred.dtype == torch.int32
    probs = torch.softmax(logits.float(), dim=1)
    assert torch.equal(conf, probs.amax(dim=1))  # bit for bit
    assert torch.equal(pred.long(), probs.argmax(dim=1))
    # a stack of exits (how the recorder calls it) gives each exit's rows bit for bit
    stacked = top1(torch.stack([logits, logits.flip(0)]))[1]
    assert torch.equal(stacked[0], conf) and torch.equal(stacked[1], conf.flip(0))


# ------------------------------------------- every encoding, sample by sample
@pytest.fixture(scope="module")
def recorded():
    backbone, bank = tiny_model(seed=4)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(192, *INPUT_SIZE, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (192,), generator=gen)
    cache = record_cache(backbone, bank, x, labels)  # batches of 64, as the model runs below
    return backbone, bank, x, cache


def adversarial_configs(cache, n_per_exit=3):
    """Configurations with one adversarial threshold at (p, k) and their expected exit positions.

    Positions before p get exit type k with threshold 1.5 (they run, nobody
    leaves), positions after p threshold -0.5 (everyone still in flight
    leaves): several enabled exits, and every decision but the one at p is
    unambiguous, so that the run-time exits after p may run on fewer rows
    without changing any decision.
    """
    P, K, M = cache.conf.shape
    rng = np.random.default_rng(0)
    out = []
    for p in range(P):
        for k in range(K):
            col = cache.conf[p, k]
            for m in rng.choice(M, n_per_exit, replace=False):
                for name, t in adversarial_thresholds(col[m]).items():
                    kk = np.full(P, k, np.int64)
                    tt = np.where(np.arange(P) < p, 1.5, -0.5)
                    tt[p] = t
                    expected = np.where(col.astype(np.float64) >= t, p, min(p + 1, P))
                    out.append((f"exit ({p}, {k}) at t {name} conf[{m}]", Config(kk, tt), expected))
    return out


def test_recording_simulation_search_and_runtime_agree_on_adversarial_thresholds(recorded):
    from dyce_search._kernels.descent import canonical_thresholds
    from dyce_search._kernels.search import presort
    from dyce_search._kernels.state import config_state
    from dyce_search._kernels.thresholds import leaving_count
    from dyce_search.evaluation import evaluate, simulate
    from dyce_search.objective import reference
    from extract.runtime import DyCEModel, top1

    backbone, bank, x, cache = recorded
    P, K, M = cache.conf.shape
    configs = adversarial_configs(cache)
    assert cache.conf.dtype == exit_rule.CONFIDENCE_DTYPE
    # The thresholds discriminate: a float32 threshold rounded to nearest (a second encoding) decides
    # some sample differently from the rule in a good share of the configurations.
    rounded_wrong = 0
    for _, config, expected in configs:
        p = int(np.argmax(config.thresholds < 1.5))
        naive = cache.conf[p, config.exit_types[p]] >= np.float32(config.thresholds[p])
        rounded_wrong += bool((naive != (expected == p)).any())
    assert rounded_wrong >= len(configs) // 5

    # recording: the cache holds top1 of each exit on the batch the model sees below
    with torch.no_grad():
        feats, _ = backbone.forward_features(x[:64])
        for p in range(P):
            for k in range(K):
                np.testing.assert_array_equal(top1(bank[p, k](feats[p]))[1].numpy(), cache.conf[p, k, :64])

    # run time: Algorithm 1 on the recorded batches. All torch work comes first: once a parallel
    # numba kernel (presort) has run, its spinning threads slow torch down many times on 2 cores.
    model = DyCEModel(backbone, bank, [c for _, c, _ in configs])
    run_position, run_pred = [], []
    for i in range(len(configs)):
        model.use(i)
        logits, position = zip(*(model(x[a:a + 64]) for a in range(0, M, 64)))
        run_position.append(torch.cat(position).numpy())
        run_pred.append(top1(torch.cat(logits))[0].numpy())

    truth = reference(cache).truth
    final_correct = reference(cache).head_correct
    keys, n_valid = presort(cache.conf, cache.pred, truth, cache.available)
    seg_q, exit_q = np.ones(P + 1, np.int64), np.ones((P, K), np.int64)
    wrong = []
    for i, (what, config, expected) in enumerate(configs):
        p = int(np.argmax(config.thresholds < 1.5))
        t, k = config.thresholds[p], int(config.exit_types[p])
        found = {}
        # the rule itself
        found["exit_rule.leaves"] = np.where(leaves(cache.conf[p, k], t), p, min(p + 1, P))
        # simulation: the metrics kernels (float32 form) behind simulate and evaluate
        sim = simulate(cache, config)
        found["simulate"] = sim.position
        ev = evaluate(cache, config)
        counts = np.bincount(expected, minlength=P + 1)
        if not np.array_equal(ev.exits, counts):
            wrong.append(f"{what}: evaluate exits {ev.exits.tolist()}, expected {counts.tolist()}")
        # search kernels (float64 form)
        e = config_state(cache.conf, cache.pred, truth, final_correct, config.exit_types.copy(),
                         config.thresholds.copy(), seg_q, exit_q)[0]
        found["config_state"] = e.astype(np.int64)
        n_leave = leaving_count(keys[p, k], n_valid[p, k], cache.conf[p, k], t)
        if n_leave != int((expected == p).sum()):
            wrong.append(f"{what}: leaving_count {n_leave}, expected {int((expected == p).sum())}")
        moved = config.thresholds.copy()
        canonical_thresholds(cache.conf, config.exit_types.copy(), moved)
        found["canonical_thresholds"] = np.where(leaves(cache.conf[p, k], moved[p]), p, min(p + 1, P))
        found["DyCEModel"] = run_position[i]
        for name, got in found.items():
            bad = np.flatnonzero(got != expected)
            if bad.size:
                m = int(bad[0])
                wrong.append(f"{what}: {name} sends sample {m} (conf {float(cache.conf[p, k, m])!r}, "
                             f"t {t!r}) to {int(got[m])}, the rule to {int(expected[m])} ({bad.size} samples)")
        if not np.array_equal(run_pred[i], sim.pred):
            wrong.append(f"{what}: run-time predictions differ from the simulation")
    assert not wrong, "\n".join(wrong[:20])


def test_threshold_curve_counts_by_the_rule(recorded):
    from analysis.curves import threshold_curve

    _, _, _, cache = recorded
    for p in range(cache.n_positions):
        col = cache.conf[p, 0]
        ts = [t for m in range(0, cache.n_samples, 17) for t in adversarial_thresholds(col[m]).values()]
        frame = threshold_curve(cache, position=p, exit_type=0, thresholds=ts)
        np.testing.assert_array_equal(frame["n_exited"].to_numpy(), [int(leaves(col, t).sum()) for t in ts])
