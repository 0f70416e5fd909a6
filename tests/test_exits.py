"""Exit types, exit heads (GAP + MLP) and the exit bank."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from extract import ExtractError  # noqa: E402
from extract.backbones import PositionInfo, from_blocks  # noqa: E402
from extract.exits import PAPER_EXIT_TYPES, ExitBank, ExitHead, ExitType, parse_exit_types  # noqa: E402

pytestmark = pytest.mark.torch

POSITIONS = [
    PositionInfo("layer1.0", 8, 4, "layer1.0"),
    PositionInfo("layer2.0", 16, 8, "layer2.0"),
    PositionInfo("layer3.0", 32, 16, "layer3.0"),
]
MLP1, MLP3 = ExitType("mlp1"), ExitType("mlp3x6", (6, 6))


def features(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, p.channels, 64 // p.reduction, 64 // p.reduction, generator=g) for p in POSITIONS]


def test_paper_exit_types():
    assert [t.name for t in PAPER_EXIT_TYPES] == ["mlp1", "mlp3x500", "mlp3x1000", "mlp5x500", "mlp5x1000"]
    assert [t.layers for t in PAPER_EXIT_TYPES] == [1, 3, 3, 5, 5]
    assert PAPER_EXIT_TYPES[3].hidden == (500, 500, 500, 500)
    assert tuple(ExitType.parse(t.name) for t in PAPER_EXIT_TYPES) == PAPER_EXIT_TYPES
    assert parse_exit_types("paper") == PAPER_EXIT_TYPES
    assert parse_exit_types("mlp1, mlp2x64") == (ExitType("mlp1"), ExitType("mlp2x64", (64,)))


@pytest.mark.parametrize("bad", ["mlp3", "mlp1x5", "mlp0", "linear", "mlp3x0", ""])
def test_bad_exit_type_names(bad):
    with pytest.raises(ExtractError):
        parse_exit_types(bad)


def test_exit_type_validation():
    with pytest.raises(ExtractError, match="no '.'"):
        ExitType("a.b")
    with pytest.raises(ExtractError, match="positive"):
        ExitType("x", (0,))
    with pytest.raises(ExtractError, match="not unique"):
        parse_exit_types("mlp1,mlp1")


@pytest.mark.parametrize("exit_type", PAPER_EXIT_TYPES[:2] + (ExitType("mlp5x7", (7, 7, 7, 7)),))
def test_exit_head_is_gap_then_mlp(exit_type):
    head = ExitHead(8, 5, exit_type)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert len(linears) == exit_type.layers
    assert [lin.in_features for lin in linears] == [8, *exit_type.hidden]
    assert linears[-1].out_features == 5
    assert sum(isinstance(m, nn.ReLU) for m in head.mlp) == exit_type.layers - 1
    x = torch.randn(4, 8, 5, 3)
    out = head(x)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out, head.mlp(x.mean(dim=(2, 3))))
    torch.testing.assert_close(head(x.mean(dim=(2, 3))), out)  # already pooled input works too


def test_bank_layout_and_lookup():
    bank = ExitBank(POSITIONS, [[MLP1], [], [MLP3, MLP1]], num_classes=5)
    assert bank.exit_types == ("mlp1", "mlp3x6")
    np.testing.assert_array_equal(bank.available, [[True, False], [False, False], [True, True]])
    assert bank[(2, "mlp3x6")] is bank[(2, 1)]
    assert bank[(2, 1)].exit_type == MLP3 and bank[(0, 0)].in_channels == 8
    assert (0, "mlp3x6") not in bank and (2, "mlp3x6") in bank
    with pytest.raises(KeyError):
        bank[(1, "mlp1")]
    assert [(p, k) for p, k, _ in bank.exits()] == [(0, 0), (2, 1), (2, 0)]


def test_bank_forward_matches_each_exit():
    bank = ExitBank(POSITIONS, [MLP1, MLP3], num_classes=5).eval()
    feats = features()
    out = bank(feats)
    assert sorted(out) == [(p, k) for p in range(3) for k in range(2)]
    for (p, k), logits in out.items():
        assert logits.shape == (3, 5)
        torch.testing.assert_close(logits, bank[(p, k)](feats[p]))
    with pytest.raises(ExtractError, match="2 feature maps for 3 positions"):
        bank(feats[:2])


def test_bank_rejects_inconsistent_types():
    with pytest.raises(ExtractError, match="differ"):
        ExitBank(POSITIONS, [[MLP1], [ExitType("mlp1", (3,))], []], 5)
    with pytest.raises(ExtractError, match="per-position"):
        ExitBank(POSITIONS, [[MLP1], [MLP1]], 5)
    with pytest.raises(ExtractError, match="no exits"):
        ExitBank(POSITIONS, [[], [], []], 5)
    with pytest.raises(ExtractError, match="repeat"):
        ExitBank(POSITIONS, [[MLP1, MLP1], [], []], 5)


def test_spec_round_trip_through_json():
    bank = ExitBank(POSITIONS, [[MLP1], [MLP3], [MLP3, MLP1]], num_classes=7)
    spec = json.loads(json.dumps(bank.spec()))
    rebuilt = ExitBank.from_spec(spec)
    assert rebuilt.exit_types == bank.exit_types and rebuilt.positions == bank.positions
    np.testing.assert_array_equal(rebuilt.available, bank.available)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in bank.state_dict().items()}
    with pytest.raises(ExtractError, match="not an exit bank spec"):
        ExitBank.from_spec({"format": "other"})
    spec["available"] = spec["available"][:2]
    with pytest.raises(ExtractError, match="available"):
        ExitBank.from_spec(spec)


def test_save_and_load(tmp_path):
    bank = ExitBank(POSITIONS, [MLP1, MLP3], num_classes=5).eval()
    path = tmp_path / "exits.pt"
    bank.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["exits.pt"]  # no temporary left behind
    loaded = ExitBank.load(path).eval()
    feats = features(seed=4)
    for key, logits in bank(feats).items():
        torch.testing.assert_close(loaded(feats)[key], logits)
    obj = torch.load(path, weights_only=True)
    obj["spec"]["exit_types"][1]["hidden"] = [9, 9]
    torch.save(obj, path)
    with pytest.raises(ExtractError, match="do not fit"):
        ExitBank.load(path)
    with pytest.raises(ExtractError, match="does not exist"):
        ExitBank.load(tmp_path / "nope.pt")


def test_distillation_step_trains_exits_only():
    """One soft cross-entropy step (Eq. 2-3) on a frozen backbone moves exits, never the backbone."""
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1), nn.ReLU()) for c_in, c_out in [(3, 8), (8, 16), (16, 16)]]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 4))
    backbone = from_blocks("toy", None, blocks, head, 4, (3, 16, 16)).eval().requires_grad_(False)
    bank = ExitBank(backbone.positions, [MLP1, MLP3], 4)
    before_backbone = [p.clone() for p in backbone.parameters()]
    before_bank = [p.clone() for p in bank.parameters()]
    optimizer = torch.optim.Adam(bank.parameters(), lr=1e-2)
    with torch.no_grad():
        feats, logits = backbone.forward_features(torch.randn(8, 3, 16, 16))
    target = logits.softmax(1)
    loss = sum(-(target * out.log_softmax(1)).sum(1).mean() for out in bank(feats).values())
    loss.backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before_backbone, backbone.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_bank, bank.parameters()))
