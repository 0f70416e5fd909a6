"""Segmented backbones: exact composition, positions, weights, checkpoints, the generic adapter."""

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

from torch import nn  # noqa: E402

from extract import ExtractError  # noqa: E402
from extract.backbones import (  # noqa: E402
    SUPPORTED,
    PositionInfo,
    SegmentedBackbone,
    build_backbone,
    eval_transform,
    from_blocks,
    register_backbone,
)
from extract.backbones import convnext, families, pretrained, registry, resnet  # noqa: E402

pytestmark = pytest.mark.torch

EXPECTED_POSITIONS = {
    "resnet18": 7,
    "resnet34": 15,
    "resnet50": 15,
    "resnet101": 32,
    "resnet152": 49,
    "convnextv2_atto": 11,  # blocks (2, 2, 6, 2)
    "convnextv2_femto": 11,
    "convnextv2_pico": 11,
    "convnextv2_nano": 13,  # (2, 2, 8, 2)
    "convnextv2_tiny": 17,  # (3, 3, 9, 3)
    "vit_tiny_patch16_224": 11,  # depth 12
    "vit_small_patch16_224": 11,
    "vit_base_patch16_224": 11,
    "deit_tiny_patch16_224": 11,
    "deit_small_patch16_224": 11,
    "deit_base_patch16_224": 11,
    "mobilenetv3_small_100": 10,  # 11 depthwise-separable / inverted-residual blocks
    "mobilenetv3_large_100": 14,  # 15
}
# A ViT's position embedding fixes its input size: build them at 32x32 (2x2 patches) to keep CPU tests fast.
SMALL = {"timm ViT / DeiT": {"img_size": 32}}


def original_and_segmented(name, seed=0):
    """The library's own model and our segmentation of the very same object (through the family table)."""
    torch.manual_seed(seed)
    family = families.BY_NAME[name]
    model = family.create(name, 1000, **SMALL.get(family.title, {})).eval()
    return model, family.segment(model, name)


def test_every_supported_name_has_a_family_and_an_expected_count():
    assert set(SUPPORTED) == set(EXPECTED_POSITIONS) == set(families.BY_NAME)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    monkeypatch.setattr(registry, "_USER", {})


@pytest.mark.parametrize("name", SUPPORTED)
def test_segments_compose_to_the_original_model(name):
    model, backbone = original_and_segmented(name)
    size = 32 if backbone.positions[0].layout.is_tokens else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(x)
        features, logits = backbone.forward_features(x)
        outputs = list(backbone.iter_segments(x))
        torch.testing.assert_close(backbone(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(backbone.head(outputs[-1]), expected, rtol=1e-5, atol=1e-5)
    assert backbone.num_positions == EXPECTED_POSITIONS[name]
    assert len(backbone.segments) == backbone.num_positions + 1
    assert len(features) == backbone.num_positions and len(outputs) == backbone.num_positions + 1
    for pos, feature in zip(backbone.positions, features):
        if pos.layout.is_tokens:  # [B, prefix + (size / patch)^2, C]
            assert feature.shape[2] == pos.channels, pos
            assert feature.shape[1] == pos.layout.prefix_tokens + (size // pos.reduction) ** 2, pos
        else:
            assert feature.shape[1] == pos.channels, pos
            assert size // feature.shape[2] == pos.reduction, pos
    # Every parameter of the original model is used exactly where it was: shared, not copied.
    assert {id(p) for p in backbone.parameters()} == {id(p) for p in model.parameters()}


def test_resnet_positions_follow_every_block_but_the_last():
    model, backbone = original_and_segmented("resnet50")
    names = backbone.position_names
    assert names[:4] == ("layer1.0", "layer1.1", "layer1.2", "layer2.0")
    assert names[-1] == "layer4.1"
    assert backbone.positions[2] == PositionInfo("layer1.2", 256, 4, "layer1.2")
    assert [p.reduction for p in backbone.positions] == [4] * 3 + [8] * 4 + [16] * 6 + [32] * 2
    assert backbone.segments[-1] is model.layer4[2]


def test_convnext_downsample_opens_the_stage_segment():
    model, backbone = original_and_segmented("convnextv2_atto")
    names = backbone.position_names
    first_of_stage1 = names.index("stages.1.blocks.0")
    segment = backbone.segments[first_of_stage1]
    assert list(segment.children()) == [model.stages[1].downsample, model.stages[1].blocks[0]]
    assert backbone.segments[first_of_stage1 - 1] is model.stages[0].blocks[1]
    assert list(backbone.segments[0].children()) == [model.stem, model.stages[0].blocks[0]]
    assert backbone.head is model.head
    assert backbone.positions[first_of_stage1] == PositionInfo("stages.1.blocks.0", 80, 8, "stages.1.blocks.0")


def test_build_backbone_is_frozen_and_in_eval_mode():
    backbone = build_backbone("resnet18")
    assert isinstance(backbone, SegmentedBackbone)
    assert not backbone.training and not any(m.training for m in backbone.modules())
    assert not any(p.requires_grad for p in backbone.parameters())
    assert backbone.name == "resnet18" and backbone.num_classes == 1000 and backbone.input_size == (3, 224, 224)
    assert backbone.weights is None


def test_meta_device_builds_shapes_without_memory():
    backbone = build_backbone("resnet152", device="meta")
    assert backbone.num_positions == 49
    assert all(p.device.type == "meta" for p in backbone.parameters())
    assert backbone.positions[-1] == PositionInfo("layer4.1", 2048, 32, "layer4.1")
    with pytest.raises(ExtractError, match="meta"):
        build_backbone("resnet18", weights="default", device="meta")


def test_unknown_name_lists_supported():
    with pytest.raises(ExtractError) as info:
        build_backbone("vgg16")
    for name in SUPPORTED:
        assert name in str(info.value)


@pytest.mark.parametrize("spec", [None, "none", "None", "random"])
def test_random_weight_specs(spec):
    assert build_backbone("convnextv2_atto", spec).weights is None


# ---- pretrained weights (the download functions are stubbed: tests stay offline)


def test_torchvision_weights_are_resolved_and_loaded(monkeypatch):
    torch.manual_seed(1)
    source = resnet.create_resnet("resnet18", 1000)
    asked = []

    def fake_download(entry):
        asked.append(entry)
        return source.state_dict()

    monkeypatch.setattr(pretrained, "torchvision_state_dict", fake_download)
    for spec, tag in [("default", "IMAGENET1K_V1"), ("DEFAULT", "IMAGENET1K_V1"), ("IMAGENET1K_V1", "IMAGENET1K_V1")]:
        backbone = build_backbone("resnet18", spec)
        assert backbone.weights == tag
        torch.testing.assert_close(backbone.segments[0][0][0].weight, source.conv1.weight)
    assert asked == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1] * 3

    monkeypatch.setattr(pretrained, "torchvision_state_dict", lambda entry: asked.append(entry) or {})
    with pytest.raises(ExtractError):  # empty download: every key missing
        build_backbone("resnet50", "IMAGENET1K_V2")
    assert asked[-1] == torchvision.models.ResNet50_Weights.IMAGENET1K_V2


def test_unknown_torchvision_weights_list_the_valid_ones(monkeypatch):
    monkeypatch.setattr(pretrained, "torchvision_state_dict", pytest.fail)
    with pytest.raises(ExtractError, match="IMAGENET1K_V2"):
        build_backbone("resnet50", "IMAGENET1K_V9")
    with pytest.raises(ExtractError, match="1000 classes"):
        build_backbone("resnet50", "default", num_classes=10)


def test_timm_tags_are_resolved(monkeypatch):
    calls = []
    real_create = convnext.create_convnext

    def fake_create(name, num_classes, tag=None, pretrained=False):
        calls.append((name, tag, pretrained))
        return real_create(name, num_classes)

    monkeypatch.setattr(convnext, "create_convnext", fake_create)
    assert build_backbone("convnextv2_atto", "default").weights == "fcmae_ft_in1k"
    assert build_backbone("convnextv2_atto", "convnextv2_atto.fcmae_ft_in1k").weights == "fcmae_ft_in1k"
    assert calls == [("convnextv2_atto", "fcmae_ft_in1k", True)] * 2
    with pytest.raises(ExtractError, match="fcmae_ft_in1k"):
        build_backbone("convnextv2_atto", "fcmae")  # pre-training weights without a classifier
    assert len(calls) == 2


def test_eval_transforms():
    from PIL import Image

    image = Image.new("RGB", (300, 260), color=(120, 30, 200))
    for name, spec in [("resnet50", "IMAGENET1K_V2"), ("resnet18", None), ("convnextv2_atto", "default")]:
        out = eval_transform(name, spec)(image)
        assert tuple(out.shape) == (3, 224, 224), name
        assert out.dtype == torch.float32
    # V2 resizes to 232 before the crop, V1 to 256: the transform follows the weights.
    assert "232" in repr(eval_transform("resnet50", "IMAGENET1K_V2"))
    assert "256" in repr(eval_transform("resnet50", "IMAGENET1K_V1"))
    with pytest.raises(ExtractError, match="supported"):
        eval_transform("alexnet")


# ---- local checkpoints


def _reference(name="resnet18", num_classes=1000, seed=3):
    torch.manual_seed(seed)
    return resnet.create_resnet(name, num_classes).eval()


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "module_prefix"])
def test_checkpoint_loads_strictly(tmp_path, wrap):
    model = _reference()
    state = model.state_dict()
    obj = {
        "bare": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    backbone = build_backbone("resnet18", path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), model(x))
    assert backbone.weights == str(path)


def test_segmented_checkpoint_round_trip(tmp_path):
    model, segmented = original_and_segmented("convnextv2_atto", seed=5)
    path = tmp_path / "seg.pt"
    torch.save(segmented.state_dict(), path)
    backbone = build_backbone("convnextv2_atto", str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), model(x))


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "r34.pt"
    torch.save(_reference("resnet34").state_dict(), path)
    with pytest.raises(ExtractError, match="another architecture than resnet18"):
        build_backbone("resnet18", path)
    # Same keys, other shapes: resnet50's bottlenecks are not resnet18's basic blocks either way.
    path = tmp_path / "r50.pt"
    torch.save(_reference("resnet50").state_dict(), path)
    with pytest.raises(ExtractError, match="another architecture"):
        build_backbone("resnet101", path)


def test_checkpoint_with_another_class_count_names_it(tmp_path):
    model = _reference(num_classes=10)
    path = tmp_path / "r18-10.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ExtractError, match=r"has 10 classes.*num_classes=10"):
        build_backbone("resnet18", path)
    backbone = build_backbone("resnet18", path, num_classes=10)
    assert backbone.num_classes == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), model(x))
    # the segmented form of the same checkpoint gets the same diagnosis
    segmented = tmp_path / "r18-10-segmented.pt"
    torch.save(backbone.state_dict(), segmented)
    with pytest.raises(ExtractError, match=r"has 10 classes \(head.2.weight"):
        build_backbone("resnet18", segmented)
    assert build_backbone("resnet18", segmented, num_classes=10).num_classes == 10


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(ExtractError, match="does not exist"):
        build_backbone("resnet18", tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ExtractError, match="not a readable"):
        build_backbone("resnet18", junk)
    listy = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(ExtractError, match="no state dict"):
        build_backbone("resnet18", listy)
    assert issubclass(ExtractError, ValueError)


# ---- the generic adapter


class _Tokens(nn.Module):
    def forward(self, x):
        return {"not": "a tensor"}


def test_from_blocks_validates_its_input():
    stem = nn.Conv2d(3, 8, 3, padding=1)
    blocks = [nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1)]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, 4))
    backbone = from_blocks("tiny", stem, blocks, head, 4, (3, 16, 16))
    assert backbone.positions == [PositionInfo("blocks.0", 8, 1, "blocks.0")]
    with pytest.raises(ExtractError, match="at least two blocks"):
        from_blocks("tiny", stem, blocks[:1], head, 4, (3, 16, 16))
    with pytest.raises(ExtractError, match="unknown blocks"):
        from_blocks("tiny", stem, blocks, head, 4, (3, 16, 16), block_prefix={"nope": nn.Identity()})
    with pytest.raises(ExtractError, match="expected a tensor"):
        from_blocks("tiny", stem, [_Tokens(), blocks[1]], head, 4, (3, 16, 16))
    with pytest.raises(ExtractError, match="nn.Module"):
        from_blocks("tiny", stem, ["conv", blocks[1]], head, 4, (3, 16, 16))
    with pytest.raises(ExtractError, match="positions"):
        SegmentedBackbone("x", [stem], head, [PositionInfo("a", 8, 1, "a")], 4, (3, 16, 16))


def test_from_blocks_keeps_training_flags():
    blocks = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    blocks.train()
    before = blocks[1].running_mean.clone()
    from_blocks("bn", None, blocks, nn.Flatten(1), 4, (3, 4, 4))
    assert blocks.training and blocks[1].training
    torch.testing.assert_close(blocks[1].running_mean, before)  # the probe did not touch the statistics


def test_register_backbone():
    def factory(weights, num_classes):
        return from_blocks("mine", None, [nn.Conv2d(3, 5, 1), nn.Conv2d(5, 5, 1)], nn.Flatten(1), 5, (3, 2, 2))

    register_backbone("mine", factory)
    assert build_backbone("mine").position_names == ("blocks.0",)
    assert "mine" in registry.available()
    with pytest.raises(ExtractError, match="built in"):
        register_backbone("resnet50", factory)
    with pytest.raises(ExtractError, match="without an eval transform"):
        eval_transform("mine")


def test_docs_example_runs():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "backbones.md").read_text()
    example = next(block for block in re.findall(r"```python\n(.*?)```", doc, re.S) if "class SmallCNN" in block)
    exec(compile(example, "docs/backbones.md", "exec"), {})
    assert "small_cnn" in registry.available()


# ---- the families beyond the paper's: weights through the same table


@pytest.mark.parametrize(
    ("name", "tag"),
    [("vit_tiny_patch16_224", "augreg_in21k_ft_in1k"), ("deit_tiny_patch16_224", "fb_in1k"),
     ("mobilenetv3_small_100", "lamb_in1k")],
)
def test_new_families_resolve_timm_tags(monkeypatch, name, tag):
    calls = []
    real_create = pretrained.create_timm

    def fake_create(model_name, num_classes, tag=None, pretrained=False, **kwargs):
        calls.append((model_name, tag, pretrained))
        return real_create(model_name, num_classes, **kwargs)

    monkeypatch.setattr(pretrained, "create_timm", fake_create)
    assert build_backbone(name, "default").weights == tag
    assert build_backbone(name, f"{name}.{tag}").weights == tag
    assert calls == [(name, tag, True)] * 2
    with pytest.raises(ExtractError, match=tag):
        build_backbone(name, "no_such_tag")
    assert len(calls) == 2
    from PIL import Image

    out = eval_transform(name, "default")(Image.new("RGB", (300, 260)))
    assert tuple(out.shape) == (3, 224, 224)


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "mobilenetv3_small_100"])
def test_new_family_checkpoints_load_strictly_and_name_the_class_count(tmp_path, name):
    torch.manual_seed(2)
    model = families.BY_NAME[name].create(name, 10).eval()
    path = tmp_path / "ten.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ExtractError, match=r"has 10 classes.*num_classes=10"):
        build_backbone(name, path)
    backbone = build_backbone(name, path, num_classes=10)
    segmented = tmp_path / "segmented.pt"
    torch.save(backbone.state_dict(), segmented)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), model(x))
        torch.testing.assert_close(build_backbone(name, segmented, num_classes=10)(x), model(x))
