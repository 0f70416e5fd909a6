"""MAC counts of segments, exits and whole models (FlopCounterMode on fake/meta tensors)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from extract import ExtractError  # noqa: E402
from extract.backbones import build_backbone, from_blocks  # noqa: E402
from extract.exits import PAPER_EXIT_TYPES, ExitBank, ExitType  # noqa: E402
from extract.macs import MacsTable, count_macs, macs_table  # noqa: E402

pytestmark = pytest.mark.torch


def linear_macs(in_features, exit_type, num_classes):
    widths = [in_features, *exit_type.hidden, num_classes]
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


@pytest.mark.parametrize(("name", "published"), [("resnet50", 4.09e9), ("resnet152", 11.5e9)])
def test_resnet_totals_match_published_counts(name, published):
    table = macs_table(build_backbone(name, device="meta"))
    assert abs(table.total_macs / published - 1) < 0.02
    assert table.segment_macs.sum() == table.total_macs
    assert np.all(np.diff(table.backbone_macs) > 0)


def test_resnet152_all_exits():
    backbone = build_backbone("resnet152", device="meta")
    table = macs_table(backbone, PAPER_EXIT_TYPES)
    assert table.exit_macs.shape == (49, 5) and table.exit_macs.dtype == np.int64
    assert table.available.all()
    for p, pos in enumerate(backbone.positions):
        expected = [linear_macs(pos.channels, t, 1000) for t in PAPER_EXIT_TYPES]
        assert table.exit_macs[p].tolist() == expected, pos
    assert table.positions == backbone.position_names
    assert table.exit_types == tuple(t.name for t in PAPER_EXIT_TYPES)


@pytest.mark.parametrize("name", ["resnet18", "convnextv2_atto"])
def test_segments_sum_to_the_whole_model(name):
    backbone = build_backbone(name)  # real weights: counted on fake tensors
    table = macs_table(backbone, input_size=(3, 64, 64))
    whole = count_macs(backbone, torch.zeros(1, 3, 64, 64))
    assert table.total_macs == whole
    # the head's classifier is the only thing after the last segment's convolutions
    fc = [m for m in backbone.head.modules() if isinstance(m, nn.Linear)][-1]
    assert table.total_macs - table.segment_macs[:-1].sum() - fc.in_features * fc.out_features == (
        count_macs(backbone.segments[-1], torch.zeros(1, *_shape_before_last(backbone)))
    )
    # the same model on the meta device counts the same
    assert macs_table(build_backbone(name, device="meta"), input_size=(3, 64, 64)).total_macs == whole


def _shape_before_last(backbone):
    pos = backbone.positions[-1]
    return (pos.channels, 64 // pos.reduction, 64 // pos.reduction)


def test_input_size_scales_convolutions():
    backbone = build_backbone("resnet18", device="meta")
    small = macs_table(backbone)
    large = macs_table(backbone, input_size=(3, 448, 448))
    fc = 512 * 1000
    assert (large.total_macs - fc) == 4 * (small.total_macs - fc)
    assert (small.input_size, large.input_size) == ((3, 224, 224), (3, 448, 448))


def test_bank_with_missing_exits_and_a_real_bank():
    torch.manual_seed(0)
    blocks = [nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Conv2d(6, 6, 1)]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(6, 3))
    backbone = from_blocks("toy", None, blocks, head, 3, (3, 8, 8))
    small, big = ExitType("mlp1"), ExitType("mlp2x10", (10,))
    bank = ExitBank(backbone.positions, [[small], [big, small]], 3)
    table = macs_table(backbone, bank)
    assert table.exit_types == ("mlp1", "mlp2x10")
    np.testing.assert_array_equal(table.available, [[True, False], [True, True]])
    np.testing.assert_array_equal(table.exit_macs, [[4 * 3, 0], [6 * 3, 6 * 10 + 10 * 3]])
    # conv MACs = out elements x in channels x kernel area
    assert table.backbone_macs.tolist() == [4 * 64 * 3 * 9, 4 * 64 * 3 * 9 + 6 * 16 * 4 * 9]
    assert table.total_macs == table.backbone_macs[-1] + 6 * 16 * 6 + 6 * 3
    frame = table.to_frame()
    assert frame["position"].tolist() == ["blocks.0", "blocks.1", "head"]
    assert frame["mlp2x10"].isna().tolist() == [True, False, True]
    assert frame["segment_macs"].sum() == table.total_macs
    assert "toy at 3x8x8" in table.to_text()
    with pytest.raises(ExtractError, match="do not match"):
        macs_table(build_backbone("resnet18", device="meta"), bank)


def test_table_json_round_trip():
    table = macs_table(build_backbone("convnextv2_atto", device="meta"), PAPER_EXIT_TYPES[:2])
    again = MacsTable.from_json(table.to_json())
    np.testing.assert_array_equal(again.backbone_macs, table.backbone_macs)
    np.testing.assert_array_equal(again.exit_macs, table.exit_macs)
    assert (again.total_macs, again.positions, again.exit_types) == (table.total_macs, table.positions, table.exit_types)
    assert json.loads(table.to_json())["format"] == "dyce-macs"
    with pytest.raises(ExtractError, match="not a MACs table"):
        MacsTable.from_dict({"format": "x"})
    with pytest.raises(ExtractError, match="non-decreasing"):
        MacsTable("b", (3, 8, 8), ("a", "b"), (), [5, 3], np.zeros((2, 0)), 10)


def test_count_macs_of_data_dependent_code():
    lin = nn.Linear(4, 5)

    def maybe_twice(x):
        y = lin(x)
        if y.sum() > -1e9:  # value-dependent branch: fake tensors cannot decide it
            y = y @ torch.ones(5, 5)
        return y

    x = torch.randn(2, 4)
    assert count_macs(maybe_twice, x) == 2 * 4 * 5 + 2 * 5 * 5
    assert count_macs(maybe_twice, x, mode="real") == 2 * 4 * 5 + 2 * 5 * 5
    assert count_macs(lin, x, mode="fake") == 2 * 4 * 5
    with pytest.raises(Exception):
        count_macs(maybe_twice, x, mode="fake")
    with pytest.raises(ExtractError, match="mode"):
        count_macs(lin, x, mode="fast")


def test_count_macs_leaves_a_training_module_untouched():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    x = torch.randn(2, 3, 6, 6) + 5
    for mode in ("fake", "real"):
        assert count_macs(net, x, mode=mode) == 2 * 4 * 4 * 4 * 3 * 9
    assert net.training and net[1].training
    assert torch.count_nonzero(net[1].running_mean) == 0 and int(net[1].num_batches_tracked) == 0


@pytest.mark.parametrize("name", ["resnet18", "resnet152"])
def test_synthetic_caches_have_the_measured_costs(name):
    """dyce_search's synthetic ResNet caches (numpy formulas) agree with what extract counts."""
    from dyce_search.synthetic import make_cache

    cache = make_cache(name, n_samples=2)
    table = macs_table(build_backbone(name, device="meta"), PAPER_EXIT_TYPES)
    assert cache.positions == table.positions and cache.exit_types == table.exit_types
    assert cache.total_macs == table.total_macs
    np.testing.assert_array_equal(cache.backbone_macs, table.backbone_macs)
    np.testing.assert_array_equal(cache.exit_macs, table.exit_macs)


# ---- the families beyond the paper's: whole-model counts, attention, token exits

NEW_FAMILIES = ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "mobilenetv3_small_100", "mobilenetv3_large_100"]


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_segmented_count_equals_the_unsegmented_model(name):
    from extract.backbones.families import BY_NAME

    family = BY_NAME[name]
    with torch.device("meta"):
        model = family.create(name, 1000)
    whole = count_macs(model, torch.zeros(1, 3, 224, 224, device="meta"))
    backbone = family.segment(model, name)
    table = macs_table(backbone)
    assert table.total_macs == whole and table.segment_macs.sum() == whole
    assert np.all(np.diff(table.backbone_macs) > 0)
    assert macs_table(build_backbone(name, device="meta")).total_macs == whole


@pytest.mark.parametrize(("name", "width"), [("vit_tiny_patch16_224", 192), ("deit_tiny_patch16_224", 192)])
def test_transformer_blocks_count_their_attention(name, width):
    table = macs_table(build_backbone(name, device="meta"), PAPER_EXIT_TYPES)
    tokens, c = 1 + (224 // 16) ** 2, width
    linear = tokens * (4 * c * c + 2 * 4 * c * c)  # qkv + projection, MLP with ratio 4
    attention = 2 * tokens * tokens * c  # q k^T and attention @ v
    assert table.segment_macs[1:-1].tolist() == [linear + attention] * (table.segment_macs.size - 2)
    # exits read C = 192 features per sample (the embedding width), not the 197 tokens
    for p in range(len(table.positions)):
        assert table.exit_macs[p].tolist() == [linear_macs(c, t, 1000) for t in PAPER_EXIT_TYPES]
