"""Fig. 4's static reference points: torchvision's published ResNets, where they compare with a curve."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from analysis import static_family
from analysis.displays import TradeoffDisplay
from dyce_search import Config, SearchResult

IMAGENET_RESNET50 = {"backbone": "resnet50", "weights": "IMAGENET1K_V2", "dataset": "imagenet", "num_classes": 1000,
                     "synthetic": False, "cost_unit": "macs"}


# -------------------------------------------------------------------- the table


@pytest.mark.torch
def test_shipped_table_equals_torchvision_metadata():
    pytest.importorskip("torchvision")
    fresh = static_family.from_torchvision()
    assert static_family.differences(static_family.shipped(), fresh) == []
    assert static_family.main(["--check"]) == 0
    # every ResNet of torchvision's resnet module, every weights tag
    import torchvision.models.resnet as tv

    builders = {n for n in tv.__all__ if n[0].islower()}
    assert set(static_family.shipped()["model"]) == builders
    from torchvision.models import get_model_weights

    assert len(fresh) == sum(len(get_model_weights(n)) for n in builders)


def test_differences_name_what_changed():
    table = static_family.shipped()
    changed = table.copy()
    changed.loc[changed["model"] == "resnet18", "top1_percent"] = 70.0
    diff = static_family.differences(changed.iloc[1:], table)
    assert diff == ["resnet18 IMAGENET1K_V1: missing"]
    diff = static_family.differences(changed, table)
    assert diff == ["resnet18 IMAGENET1K_V1: top1_percent 70.0 here, 69.758 in torchvision"]


def test_published_ops_are_this_packages_macs():
    """torchvision's "GFLOPS" count one multiply-add once: they are the MACs the caches record."""
    from dyce_search._resnet_arch import RESNET_BLOCKS, resnet_blocks

    table = static_family.shipped()
    for model in RESNET_BLOCKS:
        _, total = resnet_blocks(model)
        gmacs = table.loc[table["model"] == model, "gmacs"]
        assert len(gmacs) and np.allclose(gmacs * 1e9, total, atol=0.5e6), model  # 3 decimals of GMACs


def test_table_has_the_paper_family_with_both_recipes():
    table = static_family.shipped()
    r50 = table[table["model"] == "resnet50"].set_index("weights")
    assert r50.loc["IMAGENET1K_V1", "top1_percent"] == 76.13 and r50.loc["IMAGENET1K_V2", "top1_percent"] == 80.858
    assert r50.loc["IMAGENET1K_V2", "default"] and not r50.loc["IMAGENET1K_V1", "default"]
    assert r50.loc["IMAGENET1K_V2", "params"] == 25_557_032
    assert r50.loc["IMAGENET1K_V2", "source"].endswith("ResNet50_Weights.IMAGENET1K_V2")
    assert set(table.loc[table["family"] == "resnet", "model"]) == {f"resnet{d}" for d in (18, 34, 50, 101, 152)}


# ------------------------------------------------------------- comparability


def test_reference_models_of_an_imagenet_resnet50():
    refs = static_family.reference_models(IMAGENET_RESNET50)
    assert refs.attrs["reason"] is None
    assert list(refs["label"]) == ["ResNet-18 V1", "ResNet-34 V1", "ResNet-50 V1", "ResNet-50 V2", "ResNet-101 V1",
                                   "ResNet-101 V2", "ResNet-152 V1", "ResNet-152 V2"]
    used = refs[refs["used"]]
    assert list(used["label"]) == ["ResNet-50 V2"]
    assert used["accuracy"].iloc[0] == pytest.approx(0.80858) and used["macs"].iloc[0] == pytest.approx(4.089e9)


@pytest.mark.parametrize("weights, used", [
    ("default", ["ResNet-50 V2"]),  # torchvision's DEFAULT when the table was written
    ("ResNet50_Weights.IMAGENET1K_V1", ["ResNet-50 V1"]),
    ("/runs/r50/finetuned.pt", []),  # a checkpoint: the family is drawn, nothing highlighted
    (None, []),
])
def test_the_weights_a_cache_ran_are_highlighted(weights, used):
    refs = static_family.reference_models(dict(IMAGENET_RESNET50, weights=weights))
    assert list(refs.loc[refs["used"], "label"]) == used and len(refs) == 8


def test_a_backbone_of_another_family_adds_its_family():
    refs = static_family.reference_models(dict(IMAGENET_RESNET50, backbone="resnext50_32x4d", weights="default"))
    assert set(refs["model"]) >= {"resnet50", "resnext50_32x4d", "resnext101_64x4d"}
    assert "wide_resnet50_2" not in set(refs["model"])
    assert list(refs.loc[refs["used"], "label"]) == ["ResNeXt-50 32x4d V2"]


@pytest.mark.parametrize("change, reason", [
    ({"synthetic": True, "dataset": "imagenet-synthetic"}, "synthetic"),
    ({"dataset": "digits", "num_classes": 10}, "10 classes"),
    ({"dataset": "/data/flowers102", "num_classes": 1000}, "dataset '/data/flowers102' is not ImageNet-1K"),
    ({"cost_unit": "ms"}, "costs are in ms"),
])
def test_not_comparable_says_why(change, reason):
    refs = static_family.reference_models(dict(IMAGENET_RESNET50, **change))
    assert refs.empty and reason in refs.attrs["reason"]
    # one curve that does not compare keeps the published points out of the whole figure
    mixed = static_family.reference_models([IMAGENET_RESNET50, dict(IMAGENET_RESNET50, **change)])
    assert mixed.empty and reason in mixed.attrs["reason"]


def test_imagenet_folder_paths_count_as_imagenet():
    for dataset in ("/datasets/ImageNet", "/data/ILSVRC2012", "imagenet-1k"):
        assert static_family.not_comparable(dict(IMAGENET_RESNET50, dataset=dataset)) is None


# ------------------------------------------------------------------ Fig. 4


def imagenet_like(cache):
    """A synthetic cache relabelled as a real ImageNet run of ResNet-50 with the V2 weights."""
    md = dict(cache.metadata, synthetic=False, weights="IMAGENET1K_V2", dataset="imagenet")
    return dataclasses.replace(cache, metadata=md)


def sweep(cache) -> SearchResult:
    P = cache.n_positions
    configs = []
    for i, t in enumerate(np.linspace(0.3, 1.0, 6)):
        k = np.full(P, 4)
        k[: i % 3] = -1
        configs.append(Config(k, np.where(k >= 0, t, np.nan)))
    return SearchResult.from_configs(cache, configs, np.linspace(0, 1, 6), method="single_pass", threshold="exact",
                                     seconds=np.full(6, 0.1))


@pytest.fixture(scope="module")
def caches():
    from dyce_search.synthetic import make_cache

    synthetic = make_cache(backbone="resnet50", n_samples=1000, n_classes=1000, seed=1)
    return imagenet_like(synthetic), synthetic


def test_tradeoff_display_draws_the_published_family(caches):
    import matplotlib.pyplot as plt

    imagenet, _ = caches
    d = TradeoffDisplay.from_results({"resnet50": sweep(imagenet)})
    assert len(d.references) == 8
    d.plot(x="absolute")
    used = d.references_["used"]
    assert used.get_xdata()[0] == pytest.approx(4.089) and used.get_ydata()[0] == pytest.approx(0.80858)
    assert len(d.references_["published"].get_xdata()) == 7
    texts = [t.get_text() for t in d.reference_labels_]
    assert "ResNet-152 V1" in texts and "ResNet-50 V2" in texts
    legend = [t.get_text() for t in d.ax_.get_legend().get_texts()]
    assert any("ResNet-50 V2" in t for t in legend)
    plt.close(d.figure_)
    # relative to the one backbone's MACs (extract's count, torchvision's to 3 decimals)
    rel = TradeoffDisplay.from_results({"resnet50": sweep(imagenet)}).plot()
    x = rel.references_["used"].get_xdata()[0]
    assert x == pytest.approx(4.089e9 / imagenet.total_macs) and abs(x - 1) < 1e-3
    plt.close(rel.figure_)
    off = TradeoffDisplay.from_results({"resnet50": sweep(imagenet)}).plot(show_references=False)
    assert off.references_ == {} and off.reference_labels_ == []
    plt.close(off.figure_)


def test_relative_axis_of_two_backbones_draws_no_published_points(caches):
    import matplotlib.pyplot as plt

    from dyce_search.synthetic import make_cache

    imagenet, _ = caches
    r18 = imagenet_like(make_cache(backbone="resnet18", n_samples=1000, n_classes=1000, seed=1))
    r18 = dataclasses.replace(r18, metadata=dict(r18.metadata, weights="IMAGENET1K_V1"))
    d = TradeoffDisplay.from_results({"resnet50": sweep(imagenet), "resnet18": sweep(r18)})
    assert list(d.references.loc[d.references["used"], "label"]) == ["ResNet-18 V1", "ResNet-50 V2"]
    d.plot()  # each curve's 100 % is another backbone: no one scale for the published points
    assert d.references_ == {}
    plt.close(d.figure_)
    d.plot(x="absolute")
    assert len(d.references_["used"].get_xdata()) == 2
    plt.close(d.figure_)


def test_synthetic_cache_draws_none_and_keeps_the_reason(caches):
    import matplotlib.pyplot as plt

    _, synthetic = caches
    d = TradeoffDisplay.from_results({"resnet50": sweep(synthetic)}).plot(x="absolute")
    assert d.references.empty and "synthetic" in d.references.attrs["reason"]
    assert d.references_ == {}
    plt.close(d.figure_)


def test_report_draws_them_for_imagenet_and_says_why_not_for_synthetic(caches, tmp_path):
    from analysis.report import ReportOptions, build_report

    imagenet, synthetic = caches
    options = ReportOptions(lambdas=np.array([0.0, 0.5, 1.0]), iterative=False, disabled=0, progress=False)
    report = build_report([imagenet, synthetic], tmp_path, options=options)
    index = report.index.read_text()
    assert "torchvision's published ResNets are not drawn: the cache is synthetic" in index
    assert "filled red: the weights these curves run (ResNet-50 V2)" in index
    published = tmp_path / "data" / "fig4-tradeoff-imagenet-1000-macs-published.csv"
    assert published in report.files and "ResNet-50 V2" in published.read_text()
    assert "data/fig4-tradeoff-imagenet-1000-macs-published.csv" in index
    assert "right end: n = " in index  # Fig. 3's tail counts
