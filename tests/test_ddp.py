"""``torchrun``-style DDP: 2 CPU processes (gloo) train and record; the caches equal a single-process run's."""

import shutil
import socket

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist

import numpy as np

import _extract_tiny as tiny
from dyce_search import ExitCache
from extract.cli import main
from extract.train import load_checkpoint

pytestmark = [
    pytest.mark.slow,  # two fresh interpreters importing torch: ~30-60 s on a loaded 2-core machine
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_run_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    # 13 images per split: uneven across 2 ranks and across the 4-sample shards
    data = tiny.make_image_folder(tmp_path / "data", classes=3, per_class=4, seed=1)
    for split in ("train", "val"):
        tiny.make_image_folder(tmp_path / "extra", splits=(split,), classes=1, per_class=1, seed=2)
        shutil.copy(tmp_path / "extra" / split / "class0" / "img0.png", data / split / "class0" / "extra.png")
    common = [
        "tinynet", "--import", "_extract_tiny", "--data", str(data), "--weights", "none", "--epochs", "1",
        "--batch-size", "3", "--workers", "0", "--exit-types", "mlp1,mlp2x8", "--device", "cpu",
        "--shard-size", "4", "--quiet",
    ]
    ddp_out = tmp_path / "ddp"
    mp.spawn(tiny.ddp_worker, args=(2, free_port(), [*common, "--out", str(ddp_out), "--keep-checkpoints"]),
             nprocs=2, join=True)

    ckpt = load_checkpoint(ddp_out / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1
    assert not any(k.startswith("module.") for k in ckpt["exits"])  # the bank's own state, not DDP's wrapper
    assert not list(ddp_out.glob("shards-*"))

    # the same exits recorded by one process: identical caches
    single_out = tmp_path / "single"
    single_out.mkdir()
    shutil.copy(ddp_out / "exits.pt", single_out / "exits.pt")
    assert main([*common, "--out", str(single_out)]) == 0
    torch.testing.assert_close(
        torch.load(single_out / "backbone.pt", weights_only=True), torch.load(ddp_out / "backbone.pt", weights_only=True),
        rtol=0, atol=0,
    )
    for split in ("train", "val"):
        a = ExitCache.read(ddp_out / f"cache-{split}.parquet")
        b = ExitCache.read(single_out / f"cache-{split}.parquet")
        assert a.n_samples == b.n_samples == 13
        for name in ("sample", "label", "pred", "final_pred"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        # per-sample arithmetic; batch composition may only move the last bits
        np.testing.assert_allclose(a.conf, b.conf, rtol=1e-5)
        np.testing.assert_allclose(a.final_conf, b.final_conf, rtol=1e-5)
