"""Synthetic caches: real ResNet structure and MACs, realistic accuracy and confidence trends."""

from __future__ import annotations

import numpy as np
import pytest

from dyce_search import ExitCache
from dyce_search.synthetic import PAPER_EXIT_TYPES, SUPPORTED_BACKBONES, TOP1_ACCURACY, make_cache

N_POSITIONS = {"resnet18": 7, "resnet34": 15, "resnet50": 15, "resnet101": 32, "resnet152": 49}
# torch.utils.flop_counter on torchvision's models at 224x224, FLOPs / 2 (see test_synthetic_torch.py)
FLOP_COUNTER_MACS = {"resnet18": 1_814_073_344, "resnet50": 4_089_184_256}
TYPES = ("mlp1", "mlp3x500", "mlp3x1000", "mlp5x500", "mlp5x1000")
M = 20_000


@pytest.fixture(scope="module")
def caches():
    return {b: make_cache(b, n_samples=M, seed=1) for b in SUPPORTED_BACKBONES}


def test_supported_backbones():
    assert SUPPORTED_BACKBONES == ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@pytest.mark.parametrize("backbone", SUPPORTED_BACKBONES)
def test_structure(caches, backbone):
    c = caches[backbone]
    P = N_POSITIONS[backbone]
    assert (c.n_positions, c.n_types, c.n_samples, c.num_classes) == (P, 5, M, 1000)
    assert c.pred.shape == c.conf.shape == (P, 5, M)
    assert c.exit_types == TYPES and c.available.all()
    assert c.positions[0] == "layer1.0" and c.positions[-1] in ("layer4.0", "layer4.1")
    stages = {
        "resnet18": (2, 2, 2, 2),
        "resnet34": (3, 4, 6, 3),
        "resnet50": (3, 4, 6, 3),
        "resnet101": (3, 4, 23, 3),
        "resnet152": (3, 8, 36, 3),
    }[backbone]
    names = [f"layer{s + 1}.{b}" for s, n in enumerate(stages) for b in range(n)][:-1]
    assert list(c.positions) == names
    assert (np.diff(c.backbone_macs) > 0).all() and c.backbone_macs[-1] < c.total_macs
    expansion = 1 if backbone in ("resnet18", "resnet34") else 4
    md = c.metadata
    for entry in md["positions"]:
        stage = int(entry["name"][5]) - 1
        assert entry["channels"] == 64 * 2**stage * expansion
        assert entry["reduction"] == 4 * 2**stage


def test_total_macs_match_published_and_flop_counter(caches):
    for backbone, approx in (("resnet18", 1.82e9), ("resnet50", 4.09e9), ("resnet152", 11.5e9)):
        assert caches[backbone].total_macs == pytest.approx(approx, rel=0.02)
    for backbone, exact in FLOP_COUNTER_MACS.items():
        assert caches[backbone].total_macs == exact


def test_block_macs_by_hand(caches):
    c = caches["resnet50"]
    stem = 112 * 112 * 64 * 3 * 49
    # layer1.0: 1x1 64->64, 3x3 64->64, 1x1 64->256, downsample 1x1 64->256, all at 56x56
    block = 56 * 56 * (64 * 64 + 64 * 64 * 9 + 64 * 256 + 64 * 256)
    assert c.backbone_macs[0] == stem + block
    # layer2.0: 1x1 256->128 at 56x56, then at 28x28: 3x3 128->128 (stride), 1x1 128->512, downsample 256->512
    layer1 = block + 2 * 56 * 56 * (256 * 64 + 64 * 64 * 9 + 64 * 256)
    layer2_0 = 56 * 56 * 256 * 128 + 28 * 28 * (128 * 128 * 9 + 128 * 512 + 256 * 512)
    assert c.backbone_macs[3] == stem + layer1 + layer2_0
    r18 = caches["resnet18"]
    # BasicBlock layer1.0: two 3x3 64->64 at 56x56, no downsample
    assert r18.backbone_macs[0] == stem + 2 * 56 * 56 * 64 * 64 * 9


def test_exit_macs(caches):
    c = caches["resnet50"]
    first, last = 256, 2048  # channels at layer1.0 and layer4.1
    expected_first = [
        first * 1000,
        first * 500 + 500 * 500 + 500 * 1000,
        first * 1000 + 1000 * 1000 + 1000 * 1000,
        first * 500 + 3 * 500 * 500 + 500 * 1000,
        first * 1000 + 3 * 1000 * 1000 + 1000 * 1000,
    ]
    assert c.exit_macs[0].tolist() == expected_first
    assert c.exit_macs[-1, 0] == last * 1000
    small = make_cache("resnet18", n_samples=10, n_classes=10)
    assert small.exit_macs[0, 1] == 64 * 500 + 500 * 500 + 500 * 10
    assert small.total_macs == FLOP_COUNTER_MACS["resnet18"] - 512 * 1000 + 512 * 10
    assert [e["hidden"] for e in c.metadata["exit_types"]] == [e["hidden"] for e in PAPER_EXIT_TYPES]


@pytest.mark.parametrize("backbone", SUPPORTED_BACKBONES)
def test_head_accuracy_is_torchvision_top1(caches, backbone):
    assert caches[backbone].head_accuracy == pytest.approx(TOP1_ACCURACY[backbone] / 100, abs=1 / M)


@pytest.mark.parametrize("backbone", SUPPORTED_BACKBONES)
def test_accuracy_rises_with_depth_and_exit_capacity(caches, backbone):
    c = caches[backbone]
    acc = c.standalone_accuracy()
    assert (np.diff(acc, axis=0) > 0).all(), "deeper exits must be more accurate"
    k = {name: i for i, name in enumerate(c.exit_types)}
    for small, big in (
        ("mlp1", "mlp3x500"),
        ("mlp3x500", "mlp3x1000"),
        ("mlp3x1000", "mlp5x1000"),
        ("mlp3x500", "mlp5x500"),
        ("mlp5x500", "mlp5x1000"),
    ):
        assert (acc[:, k[small]] < acc[:, k[big]]).all(), f"{small} must be below {big}"
    assert acc[0].min() >= 0.01 and acc[0].max() <= 0.30
    assert (acc[-1] < c.head_accuracy).all() and acc[-1].max() > c.head_accuracy - 0.06


def _auroc(score, positive):
    """Probability that a random positive outranks a random negative (ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    n_pos = positive.sum()
    n_neg = positive.size - n_pos
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def test_confidence_is_realistic_and_informative(caches):
    c = caches["resnet50"]
    for conf in (c.conf, c.final_conf):
        assert conf.dtype == np.float32 and np.isfinite(conf).all()
        assert conf.min() >= np.float32(1 / c.num_classes) and conf.max() <= 1
    assert len(np.unique(c.final_conf)) > 0.5 * M, "confidences must be continuous"
    correct = c.pred == c.label
    for p in range(c.n_positions):
        for k in range(c.n_types):
            assert c.conf[p, k][correct[p, k]].mean() > c.conf[p, k][~correct[p, k]].mean()
    head_correct = c.final_pred == c.label
    assert 0.82 < _auroc(c.final_conf, head_correct) < 0.9  # ImageNet ResNets: 0.85-0.87
    confident = c.final_conf >= 0.9
    assert head_correct[confident].mean() > 0.85 and head_correct[c.final_conf < 0.3].mean() < 0.5
    # mean confidence tracks accuracy (calibrated), as the search's thresholds assume
    np.testing.assert_allclose(np.nanmean(c.conf, axis=2), c.standalone_accuracy(), atol=0.05)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet152"])
def test_confidence_quality_rises_with_depth(caches, backbone):
    # as in real networks (digits: AUROC ~0.70 at the first stage, 0.96-0.98 at the head): poor early
    c = caches[backbone]
    k = c.n_types - 1
    au = np.array([_auroc(c.conf[p, k], c.pred[p, k] == c.label) for p in range(c.n_positions)])
    assert 0.6 < au[0] < 0.75
    assert au[-1] > au[0] + 0.1
    assert np.polyfit(np.arange(c.n_positions), au, 1)[0] > 0
    assert _auroc(c.final_conf, c.final_pred == c.label) > au[-1] - 0.01


def test_exits_agree_more_with_neighbours(caches):
    c = caches["resnet152"]
    correct = (c.pred[:, 4] == c.label).astype(float)
    corr = np.corrcoef(correct)
    assert corr[20, 21] > corr[20, 40] > 0


def test_wrong_predictions_are_wrong_and_in_range(caches):
    c = caches["resnet34"]
    assert c.pred.min() >= 0 and c.pred.max() < 1000
    assert np.bincount(c.label, minlength=1000).max() - np.bincount(c.label, minlength=1000).min() <= 1


def test_deterministic_given_seed():
    a = make_cache("resnet18", n_samples=500, n_classes=20, seed=3)
    b = make_cache("resnet18", n_samples=500, n_classes=20, seed=3)
    c = make_cache("resnet18", n_samples=500, n_classes=20, seed=4)
    assert a.equals(b)
    assert not np.array_equal(a.conf, c.conf)


def test_metadata(caches):
    md = caches["resnet101"].metadata
    assert md["synthetic"] is True and md["dataset"] == "imagenet-synthetic" and md["weights"] == "synthetic"
    assert md["backbone"] == "resnet101" and md["split"] == "val" and md["seed"] == 1
    assert md["exit_types"][1] == {"name": "mlp3x500", "hidden": [500, 500]}
    assert caches["resnet101"].synthetic and "synthetic" in repr(caches["resnet101"])


@pytest.mark.parametrize("n_samples, n_classes", [(1, 2), (3, 2), (7, 10), (100, 3)])
def test_small_caches(n_samples, n_classes):
    c = make_cache("resnet50", n_samples=n_samples, n_classes=n_classes)
    assert c.n_samples == n_samples and c.num_classes == n_classes
    assert c.pred.max() < n_classes and c.final_pred.max() < n_classes and c.label.max() < n_classes


def test_bad_arguments():
    with pytest.raises(
        ValueError, match=r"unknown backbone 'vgg16'; supported: resnet18, resnet34, resnet50, resnet101, resnet152"
    ):
        make_cache("vgg16")
    with pytest.raises(ValueError, match="n_samples"):
        make_cache("resnet18", n_samples=0)
    with pytest.raises(ValueError, match="n_classes"):
        make_cache("resnet18", n_classes=1)
    with pytest.raises(ValueError, match="n_samples"):
        make_cache("resnet18", n_samples=10.0)


def test_round_trip(tmp_path):
    c = make_cache("resnet34", n_samples=300, seed=7)
    assert ExitCache.read(c.write(tmp_path / "r34.parquet")).equals(c)


def test_full_size_resnet152():
    c = make_cache()
    assert c.pred.shape == (49, 5, 50_000) and c.backbone == "resnet152"
    assert c.head_accuracy == pytest.approx(0.78312, abs=2e-5)


@pytest.fixture(scope="module")
def searched_resnet50():
    """Single-pass search (Algorithm 3, exact thresholds) over 21 lambdas on a 10,000-sample ResNet-50 cache."""
    from dyce_search import run

    return run(make_cache("resnet50", n_samples=10_000, seed=2), np.linspace(0, 1, 21), method="single_pass",
               progress=False)


def test_searched_ensemble_can_beat_the_head_but_only_slightly(searched_resnet50):
    # A confident exit knows something of its own luck, so an ensemble can rescue a few of the
    # head's errors; deep exits share most of the head's hidden margin, so only a few.
    table = searched_resnet50.table
    assert 0.995 <= table["rel_accuracy"].max() <= 1.03


def test_searched_curve_needs_most_of_the_macs_for_the_last_half_percent(searched_resnet50):
    table = searched_resnet50.table
    drop = 1 - table["rel_accuracy"].to_numpy()
    cost = table["rel_cost"].to_numpy()
    at_half_percent = cost[drop <= 0.005].min()
    at_five_percent = cost[drop <= 0.05].min()
    assert at_five_percent < at_half_percent < 1.0
    assert cost.min() < 0.2, "the cheapest configurations leave at the first exits"


def test_exits_see_their_own_luck_a_little(caches):
    # Among samples an early exit is most confident about, it is right more often than on average:
    # confidence carries information about the exit's own margin, not only about how hard a sample is.
    c = caches["resnet152"]
    for p in (10, 30, 45):
        conf, correct = c.conf[p, 4], c.pred[p, 4] == c.label
        top = conf >= np.quantile(conf, 0.9)
        assert correct[top].mean() > correct.mean() + 0.05
