"""The embedded real demo: the shipped digits run in data/digits, and rerunning the pipeline."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import numpy as np

from dyce_search import ExitCache
from extract.backbones import build_backbone
from extract.digits import EXIT_TYPES, NUM_CLASSES, SPLIT_SIZES, load_splits, run_demo
from extract.record import record_split
from extract.rundir import RunInfo, load_run

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "digits"
FILES = ("backbone.pt", "exits.pt", "run.json", "macs.json", "cache-calibration.parquet", "cache-test.parquet")




def test_fixed_stratified_split():
    splits = load_splits()
    assert {k: len(v) for k, v in splits.items()} == SPLIT_SIZES
    ids = np.concatenate([s.sample_ids for s in splits.values()])
    np.testing.assert_array_equal(np.sort(ids), np.arange(1797))
    for split in splits.values():
        counts = np.bincount(split.labels.numpy(), minlength=10)
        assert counts.min() >= len(split) // 10 - 3  # stratified: every class about equally present
        assert split.images.shape[1:] == (1, 16, 16)
    np.testing.assert_array_equal(load_splits()["test"].sample_ids, splits["test"].sample_ids)


def test_shipped_files_are_small_and_complete():
    for name in FILES:
        assert (SHIPPED / name).is_file(), name
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total < 5_000_000
    assert not list(SHIPPED.glob("shards-*")) and not list(SHIPPED.rglob("*.tmp"))


@pytest.mark.parametrize("split", ["calibration", "test"])
def test_shipped_caches(split):
    cache = ExitCache.read(SHIPPED / f"cache-{split}.parquet")
    md = cache.metadata
    assert cache.n_samples == SPLIT_SIZES[split]
    assert (md["backbone"], md["dataset"], md["split"], md["num_classes"]) == ("digits", "sklearn-digits", split, 10)
    assert cache.exit_types == EXIT_TYPES and cache.available.all()
    assert cache.positions == tuple(f"stage{s}.{j}" for s in (1, 2, 3) for j in range(3))[:-1]
    assert [p["channels"] for p in md["positions"]] == [16] * 3 + [32] * 3 + [64] * 2
    assert [p["reduction"] for p in md["positions"]] == [1] * 3 + [2] * 3 + [4] * 2
    assert np.all(np.diff(cache.backbone_macs) > 0) and cache.backbone_macs[-1] < cache.total_macs
    # exits are cheap next to the backbone segments they follow
    assert cache.exit_macs.max() < 0.01 * cache.total_macs
    np.testing.assert_array_equal(np.sort(cache.sample), cache.sample)
    head = float((cache.final_pred == cache.label).mean())
    assert head > 0.9
    exit_acc = (cache.pred == cache.label[None, None, :]).mean(axis=2)
    assert exit_acc.mean() < head
    assert np.all(exit_acc[0] < head - 0.2)  # the first position is far from the head
    assert exit_acc[:, :].mean(axis=1)[0] < exit_acc.mean(axis=1)[-1]  # later exits do better
    # confidence carries information: confident early predictions are more often right
    conf, right = cache.conf[3, 2], cache.pred[3, 2] == cache.label
    assert right[conf >= np.median(conf)].mean() > right[conf < np.median(conf)].mean()


def test_shipped_run_loads_and_reproduces_its_test_cache():
    backbone, bank, info = load_run(SHIPPED)
    assert info.backbone == "digits" and info.num_classes == NUM_CLASSES and info.splits == ("calibration", "test")
    assert bank.exit_types == EXIT_TYPES
    cache = ExitCache.read(SHIPPED / "cache-test.parquet")
    test = load_splits()["test"]
    rec = record_split(backbone, bank, test, bank.available, batch_size=128, progress=False)
    np.testing.assert_array_equal(test.sample_ids[rec.sample], cache.sample)
    np.testing.assert_array_equal(rec.final_pred, cache.final_pred)
    np.testing.assert_array_equal(rec.pred, cache.pred)
    np.testing.assert_allclose(rec.conf, cache.conf, rtol=1e-5)
    macs = json.loads((SHIPPED / "macs.json").read_text())
    assert macs["total_macs"] == cache.total_macs
    # the registered name rebuilds the architecture from the shipped weights
    again = build_backbone("digits", str(SHIPPED / "backbone.pt"), num_classes=NUM_CLASSES)
    assert again.position_names == backbone.position_names


def test_rerunning_the_pipeline_in_tmp(tmp_path):
    caches = run_demo(tmp_path, exit_epochs=1, backbone_epochs=1, progress=False)
    assert set(caches) == {"calibration", "test"}
    for name in FILES:
        assert (tmp_path / name).is_file(), name
    info = RunInfo.load(tmp_path / "run.json")
    assert info.training["epochs"] == 1 and info.training["backbone_epochs"] == 1
    assert info.backbone_file and info.backbone_module == "extract.digits"
    cache = ExitCache.read(tmp_path / "cache-test.parquet")
    assert cache.n_samples == SPLIT_SIZES["test"]
    assert (cache.final_pred == cache.label).mean() > 0.5  # one epoch already learns a lot
    assert not torch.are_deterministic_algorithms_enabled()  # settings restored
