"""Distillation training of the exits: loss (Eq. 2-3), frozen backbone, checkpoint/resume."""

import pytest

torch = pytest.importorskip("torch")

import numpy as np
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from extract import ExtractError
from extract.digits import DigitsResNet, segment
from extract.exits import ExitBank, parse_exit_types
from extract.pipeline import seeded_bank
from extract.train import (
    CHECKPOINT_NAME,
    distillation_loss,
    load_checkpoint,
    soft_cross_entropy,
    train_exits,
)

TYPES = parse_exit_types("mlp1,mlp2x8")




def tiny_backbone(seed=0):
    torch.manual_seed(seed)
    backbone = segment(DigitsResNet())
    return backbone.eval().requires_grad_(False)


def tiny_data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_soft_cross_entropy_is_eq3():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g)
    target = torch.softmax(torch.randn(5, 7, generator=g), dim=1)
    manual = -(target * torch.log(torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True))).sum(1).mean()
    assert torch.allclose(soft_cross_entropy(logits, target), manual, atol=1e-6)
    assert torch.allclose(soft_cross_entropy(logits, target), F.cross_entropy(logits, target), atol=1e-6)
    # minimised (to the target's entropy) when the exit reproduces the head's distribution
    entropy = -(target * target.log()).sum(1).mean()
    assert torch.allclose(soft_cross_entropy(target.log(), target), entropy, atol=1e-6)
    assert soft_cross_entropy(logits, target) > entropy


def test_distillation_loss_sums_every_exit_against_the_head():
    g = torch.Generator().manual_seed(0)
    head = torch.randn(4, 3, generator=g)
    out = {(0, 0): torch.randn(4, 3, generator=g), (1, 1): torch.randn(4, 3, generator=g)}
    total, parts = distillation_loss(out, head)
    target = torch.softmax(head, 1)
    expected = [float(soft_cross_entropy(out[k], target)) for k in sorted(out)]
    assert [(p, k) for p, k, _ in parts] == [(0, 0), (1, 1)]
    np.testing.assert_allclose([v for _, _, v in parts], expected, rtol=1e-6)
    assert float(total) == pytest.approx(sum(expected), rel=1e-6)
    with pytest.raises(ExtractError):
        distillation_loss({}, head)


def test_backbone_stays_frozen_and_every_exit_learns(tmp_path):
    backbone = tiny_backbone()
    backbone.train()  # train_exits must switch it to eval mode itself
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    bank = seeded_bank(backbone, TYPES, seed=0)
    start = {k: v.clone() for k, v in bank.state_dict().items()}
    result = train_exits(backbone, bank, tiny_data(), epochs=3, batch_size=8, progress=False)
    after = backbone.state_dict()
    for key, value in before.items():  # weights and BatchNorm running statistics untouched
        assert torch.equal(value, after[key]), key
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not backbone.training
    for key, value in bank.state_dict().items():
        assert not torch.equal(value, start[key]), f"exit parameter {key} did not move"
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    table = result.history[0]["exit_loss"]
    assert len(table) == backbone.num_positions and all(len(row) == 2 for row in table)


def _train(tmp, epochs, seed=0):
    backbone = tiny_backbone()
    bank = seeded_bank(backbone, TYPES, seed=seed)
    fp = {"backbone": "digits", "exits": bank.spec()}
    res = train_exits(
        backbone, bank, tiny_data(), epochs=epochs, batch_size=8, seed=seed,
        checkpoint_dir=tmp, fingerprint=fp, progress=False,
    )
    return bank, res


def test_resume_equals_uninterrupted_run(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        straight, res_straight = _train(tmp_path / "a", epochs=2)
        _first, res1 = _train(tmp_path / "b", epochs=1)
        assert res1.epochs == 1 and (tmp_path / "b" / CHECKPOINT_NAME).is_file()
        resumed, res2 = _train(tmp_path / "b", epochs=2)
    finally:
        torch.use_deterministic_algorithms(False)
    assert res2.resumed_from == 1 and res2.epochs == 2
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert [h["loss"] for h in res2.history] == [h["loss"] for h in res_straight.history]
    ckpt = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 2
    # a finished run resumes to a no-op
    again, res3 = _train(tmp_path / "b", epochs=2)
    assert res3.resumed_from == 2 and torch.equal(
        again.state_dict()["heads.0.mlp1.mlp.0.weight"], straight.state_dict()["heads.0.mlp1.mlp.0.weight"]
    )
    assert not list((tmp_path / "b").glob("*.tmp")) and not list((tmp_path / "b").glob(".*"))


def test_checkpoint_of_another_setup_is_refused(tmp_path):
    _train(tmp_path, epochs=1)
    backbone = tiny_backbone()
    other = ExitBank(backbone.positions, parse_exit_types("mlp1"), backbone.num_classes)
    with pytest.raises(ExtractError, match="was made for exits"):
        train_exits(
            backbone, other, tiny_data(), epochs=2, checkpoint_dir=tmp_path,
            fingerprint={"backbone": "digits", "exits": other.spec()}, progress=False,
        )
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ExtractError, match="unreadable"):
        load_checkpoint(tmp_path / CHECKPOINT_NAME)


def _old_epoch_order(n, seed, epoch, rank, world_size):
    """The hand-written sampler's order every earlier run trained on (the shipped digits demo included).

    randperm(n) seeded with ``seed * 100_003 + epoch``, padded by wrapping to a
    multiple of ``world_size``, then every ``world_size``-th index from ``rank``.
    """
    import math

    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    total = math.ceil(n / world_size) * world_size
    order += order[: total - n]
    return order[rank:total:world_size]


@pytest.mark.parametrize("n", [8, 11, 64, 1797])
@pytest.mark.parametrize("seed", [0, 3, 12345])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_training_sampler_keeps_the_old_order(n, seed, world_size):
    from torch.utils.data import DistributedSampler

    from extract.data import training_sampler

    for rank in range(world_size):
        sampler = training_sampler(range(n), seed=seed, rank=rank, world_size=world_size)
        assert isinstance(sampler, DistributedSampler)
        for epoch in (0, 1, 5):
            sampler.set_epoch(epoch)
            assert list(sampler) == _old_epoch_order(n, seed, epoch, rank, world_size)


def test_training_sampler_order_depends_only_on_seed_and_epoch():
    from extract.data import training_sampler

    a, b = training_sampler(range(11), seed=3), training_sampler(range(11), seed=3)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(11))
    b.set_epoch(3)
    assert list(a) != list(b)
    ranks = [training_sampler(range(11), seed=3, rank=r, world_size=3) for r in range(3)]
    for r in ranks:
        r.set_epoch(2)
    shares = [list(r) for r in ranks]
    assert all(len(s) == 4 for s in shares)  # 11 padded to 12
    assert set().union(*map(set, shares)) == set(range(11))
    with pytest.raises(ExtractError, match="empty dataset"):
        training_sampler(range(0), seed=0)


def test_timm_training_transform_is_timms_own():
    from timm.data import create_transform, resolve_data_config

    from extract.backbones import train_transform
    from extract.backbones.pretrained import timm_cfg

    for name in ("convnextv2_atto", "mobilenetv3_small_100"):
        want = create_transform(**resolve_data_config(pretrained_cfg=timm_cfg(name, None)), is_training=True)
        got = train_transform(name, None)
        assert repr(got) == repr(want)
        assert "RandomResizedCropAndInterpolation" in repr(got) and "ColorJitter" in repr(got)


def test_torchvision_training_transform_follows_the_weights_preset():
    from torchvision import transforms as T
    from torchvision.models import get_model_weights

    from extract.backbones import train_transform

    preset = get_model_weights("resnet50").DEFAULT.transforms()
    steps = train_transform("resnet50", "default").transforms
    assert isinstance(steps[0], T.RandomResizedCrop) and steps[0].size == (224, 224)
    assert steps[0].interpolation == preset.interpolation
    assert isinstance(steps[1], T.RandomHorizontalFlip)
    assert steps[-1].mean == list(preset.mean) and steps[-1].std == list(preset.std)
    v1 = train_transform("resnet50", "IMAGENET1K_V1").transforms  # the tag's own preset
    assert v1[0].size == tuple(get_model_weights("resnet50").IMAGENET1K_V1.transforms().crop_size * 2)


def test_every_family_has_a_training_transform_of_its_input_size():
    from PIL import Image

    from extract.backbones import SUPPORTED, eval_transform, train_transform
    from extract.backbones.families import FAMILIES

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8))
    for family in FAMILIES:
        name = family.names[0]
        assert name in SUPPORTED
        torch.manual_seed(0)
        x = train_transform(name, None)(image)
        assert x.shape == eval_transform(name, None)(image).shape, family.title
        # --no-augment: the eval transform itself
        assert repr(train_transform(name, None, augment=False)) == repr(eval_transform(name, None))


def test_registered_backbone_without_training_transform_needs_no_augment(monkeypatch):
    from extract.backbones import registry
    import extract.digits  # noqa: F401 - registers itself in the real registry, not in the copy below

    monkeypatch.setattr(registry, "_USER", dict(registry._USER))
    registry.register_backbone("plain", lambda weights, num_classes: None, lambda weights: "eval")
    with pytest.raises(ExtractError, match="without a training transform.*--no-augment"):
        registry.train_transform("plain")
    assert registry.train_transform("plain", augment=False) == "eval"
    registry.register_backbone("aug", lambda weights, num_classes: None, lambda weights: "eval",
                               train_transform=lambda weights: ("train", weights))
    assert registry.train_transform("aug", "w.pt") == ("train", "w.pt")