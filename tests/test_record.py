"""Recording exit caches: values, sample order, shards and resume, the ExitCache written."""

import pytest

torch = pytest.importorskip("torch")

import numpy as np
from torch.utils.data import Dataset, TensorDataset

from dyce_search import ExitCache
from extract import ExtractError
from extract.digits import DigitsResNet, segment
from extract.exits import parse_exit_types
from extract.macs import macs_table
from extract.pipeline import seeded_bank, to_cache
from extract.record import Recording, completed_shards, record_split, remove_shards
from extract.rundir import RunInfo




@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    backbone = segment(DigitsResNet()).eval().requires_grad_(False)
    bank = seeded_bank(backbone, parse_exit_types("mlp1,mlp2x8"), seed=0).eval()
    return backbone, bank


def data(n=30, seed=3):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g))


class Failing(Dataset):
    """Raises once index ``fail_at`` is reached, like a run killed part-way."""

    def __init__(self, inner, fail_at):
        self.inner, self.fail_at, self.seen = inner, fail_at, []

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i >= self.fail_at:
            raise KeyboardInterrupt("killed")
        self.seen.append(i)
        return self.inner[i]


class Counting(Dataset):
    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.seen.append(i)
        return self.inner[i]


def test_recording_matches_the_models_outputs(model):
    backbone, bank = model
    ds = data(13)
    rec = record_split(backbone, bank, ds, bank.available, batch_size=4, progress=False)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        feats, head = backbone.forward_features(x)
        out = bank(feats)
    np.testing.assert_array_equal(rec.sample, np.arange(13))
    np.testing.assert_array_equal(rec.label, ds.tensors[1].numpy())
    probs = torch.softmax(head, 1)
    np.testing.assert_array_equal(rec.final_pred, probs.argmax(1).numpy())
    np.testing.assert_allclose(rec.final_conf, probs.amax(1).numpy(), rtol=1e-5)
    assert rec.pred.shape == (backbone.num_positions, 2, 13) and rec.pred.dtype == np.int32
    for (p, k), logits in out.items():
        pk = torch.softmax(logits, 1)
        np.testing.assert_array_equal(rec.pred[p, k], pk.argmax(1).numpy())
        np.testing.assert_allclose(rec.conf[p, k], pk.amax(1).numpy(), rtol=1e-5)
    with torch.no_grad():  # the forward pass is the original model's
        np.testing.assert_array_equal(backbone(x).argmax(1).numpy(), rec.final_pred)


def test_killed_run_resumes_without_lost_or_duplicated_rows(model, tmp_path):
    backbone, bank = model
    full = record_split(backbone, bank, data(), bank.available, batch_size=4, progress=False)
    shards = tmp_path / "shards"
    failing = Failing(data(), fail_at=17)
    with pytest.raises(KeyboardInterrupt):
        # batch 4 and shard 7: batches straddle shard boundaries
        record_split(backbone, bank, failing, bank.available, batch_size=4, shard_dir=shards, shard_size=7, progress=False)
    names = sorted(p.name for p in shards.iterdir())
    assert names == ["shard-0000000000-0000000007.npz", "shard-0000000007-0000000014.npz"]
    counting = Counting(data())
    resumed = record_split(
        backbone, bank, counting, bank.available, batch_size=4, shard_dir=shards, shard_size=7, progress=False
    )
    assert min(counting.seen) == 14  # the finished shards were not recomputed
    for name in ("sample", "label", "pred", "final_pred"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(full, name))
    np.testing.assert_allclose(resumed.conf, full.conf, rtol=1e-6)
    np.testing.assert_allclose(resumed.final_conf, full.final_conf, rtol=1e-6)
    assert len(list(shards.glob("shard-*.npz"))) == 5
    remove_shards(shards)
    assert not shards.exists()


def test_shards_with_gaps_are_reported(tmp_path, model):
    backbone, bank = model
    rec = record_split(backbone, bank, data(10), bank.available, batch_size=4, progress=False)
    rec.take(np.arange(0, 4)).save(tmp_path / "shard-0000000000-0000000004.npz")
    rec.take(np.arange(5, 8)).save(tmp_path / "shard-0000000005-0000000008.npz")
    with pytest.raises(ExtractError, match="does not tile"):
        completed_shards(tmp_path, 10)
    (tmp_path / "shard-0000000005-0000000008.npz").unlink()
    assert completed_shards(tmp_path, 10)[1] == 4
    loaded = Recording.load(tmp_path / "shard-0000000000-0000000004.npz")
    np.testing.assert_array_equal(loaded.pred, rec.pred[:, :, :4])


def test_cache_reads_back_with_metadata(model, tmp_path):
    backbone, bank = model
    rec = record_split(backbone, bank, data(9), bank.available, batch_size=4, progress=False)
    macs = macs_table(backbone, bank)
    info = RunInfo(
        backbone="digits", weights=None, num_classes=10, input_size=backbone.input_size,
        positions=[p.to_dict() for p in backbone.positions], exits=bank.spec(), dataset="random",
        splits=("val",), seed=0,
    )
    ids = np.arange(100, 109)
    to_cache(rec, info, "val", bank, macs, sample_ids=ids).write(tmp_path / "cache-val.parquet")
    cache = ExitCache.read(tmp_path / "cache-val.parquet")
    np.testing.assert_array_equal(cache.sample, ids)
    np.testing.assert_array_equal(cache.pred, rec.pred)
    np.testing.assert_array_equal(cache.backbone_macs, macs.backbone_macs)
    np.testing.assert_array_equal(cache.exit_macs, macs.exit_macs)
    assert cache.total_macs == macs.total_macs
    assert cache.positions == backbone.position_names and cache.exit_types == ("mlp1", "mlp2x8")
    md = cache.metadata
    assert (md["backbone"], md["split"], md["dataset"], md["num_classes"]) == ("digits", "val", "random", 10)
    assert md["positions"][3]["channels"] == backbone.positions[3].channels
    assert md["positions"][3]["reduction"] == backbone.positions[3].reduction
    assert md["positions"][3]["backbone_macs"] == int(macs.backbone_macs[3])
    assert md["exit_types"][1] == {"name": "mlp2x8", "hidden": [8]}
    assert md["exit_macs"][0][0] == int(macs.exit_macs[0, 0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("n,chunk,world_size", [(30, 7, 1), (13, 4, 2), (5, 8, 3), (9, 3, 4)])
def test_chunk_sampler_covers_each_chunk_once_with_equal_rank_counts(n, chunk, world_size):
    from extract.data import ChunkSampler

    samplers = [ChunkSampler(2, n, chunk, rank=r, world_size=world_size) for r in range(world_size)]
    shares = [list(s) for s in samplers]
    assert len({len(s) for s in shares}) == 1 and all(len(s) == len(samplers[0]) for s in shares)
    pos = 0
    for first, stop in samplers[0].chunks():
        per = samplers[0].per_rank(first, stop)
        got = set().union(*(set(s[pos : pos + per]) for s in shares))
        assert got == set(range(first, stop))
        pos += per
