"""Each family beyond the paper's, end to end with random weights: extract -> search -> DyCEModel.

``python -m extract NAME --weights none`` on a tiny image folder trains the exits
and records the caches; a search and random configurations run on the cache; the
run-time model loaded from the run directory exits where the simulation says,
with the MACs the simulation predicts; a latency profile covers every exit.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

import dyce_search  # noqa: E402
import _extract_tiny as tiny  # noqa: E402
from _extract_tiny import run_cli  # noqa: E402
from _simulation import compare_with_simulation, quantile_configs  # noqa: E402
from dyce_search import ExitCache, SearchResult  # noqa: E402
from dyce_search.evaluation import simulate  # noqa: E402
from extract.backbones import eval_transform  # noqa: E402
from extract.data import image_folder  # noqa: E402
from extract.latency import measure_costs  # noqa: E402
from extract.rundir import load_run  # noqa: E402
from extract.runtime import DyCEModel  # noqa: E402

pytestmark = pytest.mark.torch

# The ViT's second exit type reads the class token, so both token poolings run through the pipeline.
RUNS = {"vit_tiny_patch16_224": "mlp1,mlp2x16-token", "mobilenetv3_small_100": "mlp1,mlp2x16"}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_weights_none_run_through_search_to_the_runtime_model(capsys, tmp_path, name):
    data = tiny.make_image_folder(tmp_path / "data", classes=3, per_class=4)
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys, name, "--data", data, "--weights", "none", "--out", out, "--epochs", "1", "--batch-size", "6",
        "--workers", "0", "--exit-types", RUNS[name], "--device", "cpu", "--quiet",
    )
    assert code == 0, err
    cache = ExitCache.read(out / "cache-val.parquet")
    backbone, bank, info = load_run(out)
    assert [p["name"] for p in info.positions] == list(cache.positions) == list(backbone.position_names)
    # the layout travels in the cache metadata, next to each position's cumulative MACs
    recorded = [{k: v for k, v in d.items() if k != "backbone_macs"} for d in cache.metadata["positions"]]
    assert recorded == info.positions
    assert cache.n_samples == 12 and cache.available.all()

    searched = dyce_search.run(cache, np.linspace(0.05, 0.95, 4))
    configs = searched.configs + quantile_configs(cache, n=8)
    result = SearchResult.from_configs(
        cache, configs, np.linspace(0.0, 1.0, len(configs)), method="hand", threshold="quantile"
    )
    result.save(tmp_path / "result.json")
    model = DyCEModel.load(out, tmp_path / "result.json")

    images = image_folder(data, "val", eval_transform(name, None))
    x = torch.stack([images[int(i)][0] for i in cache.sample])
    rows = compare_with_simulation(model, cache, x, result.configs)
    for i, (differ, borderline, executed, predicted) in enumerate(rows):
        assert differ == borderline, f"config {i}: {differ} samples differ, {borderline} borderline"
        assert executed == pytest.approx(predicted, rel=0.01), f"config {i}"
    # the configurations really leave at several exits, not all at the head
    assert len({tuple(simulate(cache, c).position) for c in result.configs}) > 3

    costs = measure_costs(backbone, bank, min_run_time=0.002)
    assert costs.segment.shape == (len(cache.positions) + 1,) and np.all(costs.segment > 0)
    assert np.all(np.isfinite(costs.exit)) and costs.positions == cache.positions
    assert dyce_search.run(cache, [0.5], costs=costs).configs[0].exit_types.shape == (len(cache.positions),)
