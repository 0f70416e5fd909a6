"""The synthetic caches' analytic MACs equal torch.utils.flop_counter on torchvision's models / MLP exits."""

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from dyce_search.synthetic import PAPER_EXIT_TYPES, SUPPORTED_BACKBONES, make_cache  # noqa: E402

pytestmark = pytest.mark.torch


def _flop_counts(module, x):
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2, {k: sum(v.values()) // 2 for k, v in counter.get_flop_counts().items()}


@pytest.mark.parametrize("backbone", SUPPORTED_BACKBONES)
@pytest.mark.parametrize("num_classes", [1000, 10])
def test_backbone_macs_match_flop_counter(backbone, num_classes):
    # meta tensors: shapes and FLOP counts without memory or compute
    with torch.device("meta"):
        model = getattr(torchvision.models, backbone)(weights=None, num_classes=num_classes).eval()
        x = torch.empty(1, 3, 224, 224)
    total, per_module = _flop_counts(model, x)
    cache = make_cache(backbone, n_samples=2, n_classes=num_classes)
    assert cache.total_macs == total
    cumulative = per_module["ResNet.conv1"]
    expected = []
    for s in range(1, 5):
        for b in range(len(getattr(model, f"layer{s}"))):
            cumulative += per_module[f"ResNet.layer{s}.{b}"]
            expected.append(cumulative)
    assert cache.backbone_macs.tolist() == expected[:-1]


def test_exit_macs_match_flop_counter():
    cache = make_cache("resnet50", n_samples=2, n_classes=1000)
    for p in (0, 7, 14):
        channels = cache.metadata["positions"][p]["channels"]
        reduction = cache.metadata["positions"][p]["reduction"]
        x = torch.empty(1, channels, 224 // reduction, 224 // reduction, device="meta")
        for k, spec in enumerate(PAPER_EXIT_TYPES):
            widths = [channels, *spec["hidden"], 1000]
            layers = [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
            head = torch.nn.Sequential(*layers[:-1]).to("meta")
            total, _ = _flop_counts(head, x)
            assert cache.exit_macs[p, k] == total, (p, spec["name"])
