"""Measured latency profiles: shape, file format, and use as the search's cost model."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from dyce_search import Costs, ExitCache  # noqa: E402
from dyce_search.evaluation import evaluate  # noqa: E402
from extract.backbones import from_blocks  # noqa: E402
from extract.exits import ExitBank, ExitType  # noqa: E402
from extract.latency import main, measure_costs, measure_latency, save_profile, time_call  # noqa: E402
from extract.macs import macs_table  # noqa: E402

NUM_CLASSES = 5


def _conv(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    blocks = [("a", _conv(4, 4, 1)), ("b", _conv(4, 8, 2)), ("c", _conv(8, 64, 2))]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, NUM_CLASSES))
    backbone = from_blocks("lat", _conv(1, 4, 1), blocks, head, NUM_CLASSES, (1, 16, 16))
    # the exit type "big" exists only at position "b" (a sparse bank)
    bank = ExitBank(backbone.positions, [[ExitType("mlp1")], [ExitType("mlp1"), ExitType("big", (256,))]], NUM_CLASSES)
    return backbone.eval(), bank.eval()


def test_time_call_uses_torch_benchmark_and_reports_the_spread(monkeypatch):
    from torch.utils import benchmark

    measured = []
    real = benchmark.Timer.blocked_autorange

    def spy(self, *args, **kwargs):
        measured.append(kwargs.get("min_run_time"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(benchmark.Timer, "blocked_autorange", spy)
    calls, threads = [], []
    torch.set_num_threads(2)
    try:
        timing = time_call(lambda: (calls.append(1), threads.append(torch.get_num_threads())), "cpu",
                           min_run_time=0.01)
    finally:
        torch.set_num_threads(1)
    assert measured == [0.01]
    assert timing.blocks >= 1 and timing.calls_per_block >= 1
    assert len(calls) >= timing.blocks * timing.calls_per_block  # the block-size search comes on top
    assert set(threads) == {2}  # the caller's thread count, not the Timer's default of 1
    assert 0 <= timing.iqr and 0 < timing.median
    with pytest.raises(ValueError, match="min_run_time"):
        time_call(lambda: None, "cpu", min_run_time=0)


def test_profile_spread_has_the_costs_shape(model):
    backbone, bank = model
    profile = measure_latency(backbone, bank, batch_size=2, min_run_time=0.002)
    costs = profile.costs
    assert profile.segment_iqr.shape == costs.segment.shape and (profile.segment_iqr >= 0).all()
    assert profile.exit_iqr.shape == costs.exit.shape
    np.testing.assert_array_equal(np.isnan(profile.exit_iqr), np.isnan(costs.exit))
    spread = profile.spread()
    assert spread["statistic"] == "iqr" and spread["exit"][0][1] is None and len(spread["segment"]) == 3
    assert all(b >= 1 for b in spread["blocks"]["segment"]) and spread["blocks"]["exit"][0] == [
        int(profile.exit_blocks[0, 0]), None]


def test_profile_has_the_costs_layout(model):
    backbone, bank = model
    costs = measure_costs(backbone, bank, batch_size=4, min_run_time=0.002)
    assert costs.unit == "ms" and costs.backbone == "lat"
    assert costs.positions == ("a", "b") and costs.exit_types == ("mlp1", "big")
    assert costs.segment.shape == (3,) and (costs.segment > 0).all()
    assert np.isfinite(costs.exit[:, 0]).all() and (costs.exit[:, 0] > 0).all()
    assert np.isnan(costs.exit[0, 1]) and costs.exit[1, 1] > 0


def test_saved_profile_loads_and_drives_a_search(model, tmp_path):
    import dyce_search
    from extract.record import record_split

    backbone, bank = model
    costs = measure_costs(backbone, bank, batch_size=2, min_run_time=0.002)
    path = tmp_path / "profile.json"
    save_profile(costs, path, measurement={"device": "cpu", "batch_size": 2})
    doc = json.loads(path.read_text())
    assert doc["format"] == "dyce-costs" and doc["unit"] == "ms" and doc["exit"][0][1] is None
    assert doc["measurement"]["batch_size"] == 2
    loaded = Costs.load(path)
    np.testing.assert_array_equal(loaded.segment, costs.segment)
    np.testing.assert_array_equal(loaded.exit, costs.exit)

    x = torch.randn(96, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    rec = record_split(
        backbone, bank, torch.utils.data.TensorDataset(x, torch.zeros(96, dtype=torch.int64)), bank.available,
        progress=False,
    )
    macs = macs_table(backbone, bank)
    cache = ExitCache(
        label=rec.final_pred, pred=rec.pred, conf=rec.conf, final_pred=rec.final_pred, final_conf=rec.final_conf,
        backbone_macs=macs.backbone_macs, exit_macs=macs.exit_macs, available=macs.available,
        total_macs=macs.total_macs, positions=macs.positions, exit_types=macs.exit_types,
        sample=rec.sample, num_classes=NUM_CLASSES, metadata={"backbone": "lat"},
    )
    result = dyce_search.run(cache, [0.2, 0.8], costs=loaded)
    assert result.metadata["cost_unit"] == "ms"
    for config, row in zip(result.configs, result.table.itertuples()):
        assert row.rel_cost == pytest.approx(evaluate(cache, config, loaded).rel_cost)


def test_cli_reports_a_bad_run_dir_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "p.json"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "p.json").exists()


def test_cli_profiles_the_digits_run(tmp_path):
    from pathlib import Path

    run = Path(__file__).resolve().parents[1] / "data" / "digits"
    if not (run / "run.json").exists():
        pytest.skip("the shipped digits run (data/digits) is not there")
    out = tmp_path / "digits.json"
    assert main([str(run), "--out", str(out), "--batch-size", "8", "--min-run-time", "0.002", "--quiet"]) == 0
    costs = Costs.load(out)
    cache = ExitCache.read(run / "cache-calibration.parquet")
    costs.check(cache)  # same positions and exit types as the run's caches
    assert costs.unit == "ms" and costs.backbone == "digits"
    measurement = json.loads(out.read_text())["measurement"]
    assert measurement["batch_size"] == 8 and measurement["min_run_time"] == 0.002
    spread = measurement["spread"]  # one IQR per entry, null where the run has no exit
    assert spread["statistic"] == "iqr" and len(spread["segment"]) == costs.n_positions + 1
    assert [[v is None for v in row] for row in spread["exit"]] == np.isnan(costs.exit).tolist()
    import dyce_search

    result = dyce_search.run(cache, [0.3, 0.9], costs=out)  # the search takes the file path too
    assert result.metadata["cost_unit"] == "ms"
    assert np.isfinite(result.table["rel_cost"]).all() and (result.table["rel_cost"] > 0).all()
