"""Feature layouts: exits pool tokens as tokens, from_blocks refuses what it cannot read, layouts round-trip."""

import json

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from extract import ExtractError  # noqa: E402
from extract.backbones import PositionInfo, from_blocks  # noqa: E402
from extract.backbones.layout import NCHW, FeatureLayout, tokens  # noqa: E402
from extract.backbones.vit import Embed, Head  # noqa: E402
from extract.exits import ExitBank, ExitType, parse_exit_types  # noqa: E402
from extract.rundir import check_positions  # noqa: E402

pytestmark = pytest.mark.torch

CLS = tokens(1, class_token=True)


class Permute(torch.nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def tiny_vit(width=17, num_classes=5):
    """A 3-block timm ViT at 32x32 with 8x8 patches: a class token + 16 patch tokens.

    Width 17 equals the token count, so that pooling the wrong axis of [B, L, C]
    still fits the exit's Linear layer and only the values can tell.
    """
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, img_size=32, patch_size=8,
        embed_dim=width, depth=3, num_heads=1,
    ).eval()


def vit_parts(model):
    return Embed(model), [(f"blocks.{i}", b) for i, b in enumerate(model.blocks)], Head(model)


def test_exit_on_vit_tokens_pools_the_patch_tokens():
    model = tiny_vit()
    embed, blocks, head = vit_parts(model)
    backbone = from_blocks("tiny_vit", embed, blocks, head, 5, (3, 32, 32), layout=CLS)
    assert [(p.channels, p.reduction, p.layout) for p in backbone.positions] == [(17, 8, CLS)] * 2
    bank = ExitBank(backbone.positions, [ExitType("mlp1")], 5)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        features, logits = backbone.forward_features(x)
        torch.testing.assert_close(logits, model(x))
        exit_ = bank[0, "mlp1"]
        patches = features[0][:, 1:]  # [B, 16, 17]: every token but the class token
        torch.testing.assert_close(exit_(features[0]), exit_.mlp(patches.mean(dim=1)))


def test_class_token_pooling_is_an_exit_type_option():
    position = PositionInfo("blocks.0", 6, 8, "blocks.0", CLS)
    avg, cls = parse_exit_types("mlp1,mlp2x4-token")
    assert (avg.token_pool, cls.token_pool, cls.hidden) == ("avg", "token", (4,))
    bank = ExitBank([position], [avg, cls], 3)
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(bank[0, "mlp1"](x), bank[0, "mlp1"].mlp(x[:, 1:].mean(dim=1)))
        torch.testing.assert_close(bank[0, "mlp2x4-token"](x), bank[0, "mlp2x4-token"].mlp(x[:, 0]))
    # the class token exists only where tokens have one
    for where in (PositionInfo("layer1.0", 6, 4, "layer1.0"), PositionInfo("b", 6, 8, "b", tokens(0))):
        with pytest.raises(ExtractError, match="class-token pooling"):
            ExitBank([where], [cls], 3)
    with pytest.raises(ExtractError, match="'max'"):
        ExitType.parse("mlp1-max")


def test_from_blocks_refuses_an_ambiguous_layout():
    embed, blocks, head = vit_parts(tiny_vit())
    with pytest.raises(ExtractError, match=r"'blocks\.0'.*\(1, 17, 17\) is ambiguous"):
        from_blocks("tiny_vit", embed, blocks, head, 5, (3, 32, 32))
    with pytest.raises(ExtractError, match=r"\(1, 17, 17\) is not NCHW"):
        from_blocks("tiny_vit", embed, blocks, head, 5, (3, 32, 32), layout=NCHW)
    # 17 tokens with no prefix token are not a grid of patches at any stride
    with pytest.raises(ExtractError, match="do not tile"):
        from_blocks("tiny_vit", embed, blocks, head, 5, (3, 32, 32), layout=tokens(0))
    # channels last [B, H, W, C]: 8x8 spatial with 24 channels reads as strides 4 and 1.33
    nhwc = [torch.nn.Sequential(torch.nn.Conv2d(3, 24, 4, 4), Permute()), torch.nn.Identity()]
    with pytest.raises(ExtractError, match=r"\(1, 8, 8, 24\) does not read as NCHW"):
        from_blocks("nhwc", None, nhwc, torch.nn.Identity(), 2, (3, 32, 32))
    flat = [torch.nn.Flatten(1), torch.nn.Identity()]
    with pytest.raises(ExtractError, match=r"\(1, 48\) is neither NCHW"):
        from_blocks("flat", None, flat, torch.nn.Linear(48, 2), 2, (3, 4, 4))


def test_layouts_travel_with_the_positions():
    model = tiny_vit(width=8)
    backbone = from_blocks("tiny_vit", *vit_parts(model)[:2], vit_parts(model)[2], 5, (3, 32, 32), layout=CLS)
    saved = json.loads(json.dumps([p.to_dict() for p in backbone.positions]))
    assert saved[0] == {"name": "blocks.0", "channels": 8, "reduction": 8, "module": "blocks.0",
                        "layout": "NLC", "prefix_tokens": 1, "class_token": True}
    assert [PositionInfo.from_dict(d) for d in saved] == backbone.positions
    check_positions(backbone, saved, "run.json")
    saved[1]["class_token"] = False
    with pytest.raises(ExtractError, match="does not match"):
        check_positions(backbone, saved, "run.json")
    # feature maps write no layout fields: files from before layouts read as NCHW
    assert PositionInfo("a", 4, 2, "a").to_dict() == {"name": "a", "channels": 4, "reduction": 2, "module": "a"}
    assert PositionInfo.from_dict({"name": "a", "channels": 4, "reduction": 2, "module": "a"}).layout == NCHW
    bank = ExitBank(backbone.positions, parse_exit_types("mlp1,mlp1-token"), 5)
    again = ExitBank.from_spec(json.loads(json.dumps(bank.spec())))
    assert again.positions == bank.positions and again.types == bank.types
    assert again.types[1].token_pool == "token"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"fmt": "NHWC"}, "'NHWC'"), ({"fmt": "NCHW", "prefix_tokens": 1}, "NCHW has no tokens"),
     ({"fmt": "NLC", "class_token": True}, "prefix_tokens >= 1"), ({"fmt": "NLC", "prefix_tokens": -1}, "-1")],
)
def test_bad_layouts_name_the_value(kwargs, message):
    with pytest.raises(ExtractError, match=message):
        FeatureLayout(**kwargs)
