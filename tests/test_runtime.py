"""The run-time DyCE model (Algorithm 1): batching, switching, loading, and equality with the simulation."""

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from dyce_search import Config, ExitCache, ResultError, SearchResult  # noqa: E402
# from the submodule: once it is imported, the package attribute `evaluate` is the module
from dyce_search.evaluation import simulate  # noqa: E402
from extract.backbones import from_blocks  # noqa: E402
from extract.exits import ExitBank, ExitType  # noqa: E402
from extract.macs import macs_table  # noqa: E402
from extract.runtime import (  # noqa: E402
    DyCEModel,
    UnknownConfigError,
    check_result_fits,
)
from extract.fingerprint import run_record  # noqa: E402
from _simulation import compare_with_simulation, quantile_configs  # noqa: E402

NUM_CLASSES = 6
INPUT_SIZE = (2, 8, 8)
DIGITS_RUN = Path(__file__).resolve().parents[1] / "data" / "digits"


# ------------------------------------------------------------------ tiny model
def _conv(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def tiny_model(seed=0):
    """A 4-block CNN (3 early positions) with two exit types everywhere, random weights."""
    torch.manual_seed(seed)
    blocks = [("s1", _conv(8, 8, 1)), ("s2", _conv(8, 16, 2)), ("s3", _conv(16, 16, 1)), ("s4", _conv(16, 24, 2))]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, NUM_CLASSES))
    backbone = from_blocks("tiny", _conv(2, 8, 1), blocks, head, NUM_CLASSES, INPUT_SIZE)
    bank = ExitBank(backbone.positions, [ExitType("mlp1"), ExitType("mlp2x16", (16,))], NUM_CLASSES)
    with torch.no_grad():
        # Random exits are nearly uniform; sharpen them so confidences spread over (1/C, 1).
        for _, _, head_ in bank.exits():
            head_.mlp[-1].weight.mul_(12.0)
    return backbone.eval(), bank.eval()


def record_cache(backbone, bank, x, labels):
    """The exit cache of ``x``, recorded by the extraction code (batch of 64, CPU)."""
    from extract.record import record_split

    dataset = torch.utils.data.TensorDataset(x, labels)
    rec = record_split(backbone, bank, dataset, bank.available, batch_size=64, progress=False)
    macs = macs_table(backbone, bank)
    return ExitCache(
        label=rec.label, pred=rec.pred, conf=rec.conf, final_pred=rec.final_pred, final_conf=rec.final_conf,
        backbone_macs=macs.backbone_macs, exit_macs=macs.exit_macs, available=macs.available,
        total_macs=macs.total_macs, positions=macs.positions, exit_types=macs.exit_types,
        sample=rec.sample, num_classes=NUM_CLASSES,
        metadata={"backbone": "tiny", "split": "test", "provenance": run_record(backbone, bank, tiny_info())},
    )


def tiny_info():
    """What run.json would say of the tiny model (no fingerprints: digests come from the loaded weights)."""
    from extract.rundir import RunInfo

    return RunInfo(backbone="tiny", weights=None, num_classes=NUM_CLASSES, input_size=INPUT_SIZE, positions=[],
                   exits={}, dataset=None, splits=("test",), seed=0)


@pytest.fixture(scope="module")
def tiny():
    backbone, bank = tiny_model()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(256, *INPUT_SIZE, generator=gen)
    with torch.no_grad():
        head_pred = backbone(x).argmax(1)
    # labels agree with the head 80% of the time, so accuracies are neither 0 nor 1
    noise = torch.randint(0, NUM_CLASSES, (256,), generator=gen)
    labels = torch.where(torch.rand(256, generator=gen) < 0.8, head_pred, noise)
    cache = record_cache(backbone, bank, x, labels)
    configs = quantile_configs(cache)
    result = SearchResult.from_configs(
        cache, configs, np.linspace(0.0, 1.0, len(configs)), method="hand", threshold="quantile"
    )
    return backbone, bank, x, cache, result


def reference_forward(backbone, bank, config, x):
    """Algorithm 1 one sample at a time, in plain Python (the test's reference).

    Returns logits [B, C], exit positions [B] and, per sample, the smallest
    distance between a confidence it was tested on and that exit's threshold.
    """
    P = len(backbone.positions)
    logits_out, positions, margins = [], [], []
    with torch.no_grad():
        for sample in x:
            h, margin = sample[None], np.inf
            for p in range(P + 1):
                h = backbone.segments[p](h)
                if p == P:
                    logits_out.append(backbone.head(h)[0])
                    positions.append(P)
                    break
                k = int(config.exit_types[p])
                if k < 0:
                    continue
                y = bank[p, k](h)
                conf = float(torch.softmax(y.float(), 1).max())
                margin = min(margin, abs(conf - config.thresholds[p]))
                if conf >= config.thresholds[p]:
                    logits_out.append(y[0])
                    positions.append(p)
                    break
            margins.append(margin)
    return torch.stack(logits_out), torch.tensor(positions), np.array(margins)


# -------------------------------------------------------------------- forward
def test_forward_matches_per_sample_reference(tiny):
    backbone, bank, x, cache, result = tiny
    model = DyCEModel(backbone, bank, result)
    x = x[:32]
    for i, config in enumerate(result.configs):
        logits, position = model.use(i)(x)
        ref_logits, ref_position, margin = reference_forward(backbone, bank, config, x)
        assert position.dtype == torch.int64 and position.shape == (32,)
        # A batch of one may round differently in the last bits: decisions may
        # only differ where a confidence is within float32 precision of a threshold.
        clear = torch.from_numpy(margin > 1e-6)
        assert torch.equal(position[clear], ref_position[clear]), f"config {i}"
        assert int((~clear).sum()) <= 2
        torch.testing.assert_close(logits[clear], ref_logits[clear], rtol=1e-4, atol=1e-5)


def test_original_model_when_no_configuration_is_active(tiny):
    backbone, bank, x, _, result = tiny
    model = DyCEModel(backbone, bank, result).use()
    assert model.active is None
    logits, position = model(x[:32])
    torch.testing.assert_close(logits, backbone(x[:32]))
    assert (position == len(backbone.positions)).all()


def test_only_enabled_exits_run_on_samples_in_flight(tiny):
    backbone, bank, x, cache, result = tiny
    calls = {}

    def hook(name):
        def record(module, args, out):
            calls.setdefault(name, []).append(args[0].shape[0])
        return record

    handles = [head.register_forward_hook(hook((p, k))) for p, k, head in bank.exits()]
    try:
        model = DyCEModel(backbone, bank, result)
        for i, config in enumerate(result.configs):
            calls.clear()
            _, position = model.use(i)(x)
            enabled = [(p, int(config.exit_types[p])) for p in np.flatnonzero(config.enabled)]
            ran = sorted(calls)
            # an enabled exit runs once on exactly the samples that reached it
            reached = [int((position >= p).sum()) for p, _ in enabled]
            expected = {pk: [n] for pk, n in zip(enabled, reached) if n > 0}
            assert ran == sorted(expected), f"config {i}: ran {ran}, enabled {enabled}"
            assert calls == expected
    finally:
        for h in handles:
            h.remove()


def test_empty_batch_and_all_leave_at_first_exit(tiny):
    backbone, bank, x, _, _ = tiny
    P = len(backbone.positions)
    everyone_leaves = Config(np.array([0] + [-1] * (P - 1)), np.array([0.0] + [np.nan] * (P - 1)))
    model = DyCEModel(backbone, bank, [everyone_leaves])
    assert model.active is None  # plain Configs: nothing known about their accuracy, the original model runs
    model.use(0)
    logits, position = model(x[:0])
    assert logits.shape == (0, NUM_CLASSES) and position.shape == (0,)
    logits, position = model(x[:10])
    assert (position == 0).all()
    with torch.no_grad():
        torch.testing.assert_close(logits, bank[0, 0](backbone.segments[0](x[:10])))


# ------------------------------------------------------------------ switching
def test_use_switches_without_touching_weights(tiny):
    backbone, bank, x, _, result = tiny
    model = DyCEModel(backbone, bank, result)
    storage = {name: t.data_ptr() for name, t in model.state_dict(keep_vars=True).items()}
    values = {name: t.detach().clone() for name, t in model.state_dict().items()}
    seen = set()
    for i in range(len(result.configs)):
        assert model.use(i) is model and model.active == i
        seen.add(model(x[:16])[1].tolist().__repr__())
    model.use(lam=float(result.lambdas[3]))
    assert model.active == 3
    model.use(-1)
    assert model.active == len(result.configs) - 1
    assert len(seen) > 3  # the configurations really differ
    assert {name: t.data_ptr() for name, t in model.state_dict(keep_vars=True).items()} == storage
    for name, t in model.state_dict().items():
        assert torch.equal(t, values[name]), name
    assert model.configs == tuple(result.configs)
    assert model.lambdas == tuple(float(v) for v in result.lambdas)


def test_starts_in_the_most_accurate_configuration_and_switches_by_budget(tiny):
    backbone, bank, _, _, result = tiny
    model = DyCEModel(backbone, bank, result)
    table = result.table
    start = model.active
    assert table["rel_accuracy"].iloc[start] == table["rel_accuracy"].max()
    assert table["rel_cost"].iloc[start] == table.loc[table["rel_accuracy"] == table["rel_accuracy"].max(),
                                                      "rel_cost"].min()
    for budget in (0.3, 0.6, 1.0):
        fits = table[table["rel_cost"] <= budget]
        if fits.empty:
            with pytest.raises(UnknownConfigError, match="costs <="):
                model.use(max_cost=budget)
            continue
        model.use(max_cost=budget)
        assert table["rel_accuracy"].iloc[model.active] == fits["rel_accuracy"].max()
        assert model.selection_basis == "search split (in-sample)"
    drop = 1 - table["rel_accuracy"]
    for level in (0.02, 0.1, 0.5):
        fits = table[drop <= level + 1e-12]
        if not fits.empty:
            model.use(max_drop=level)
            assert table["rel_cost"].iloc[model.active] == fits["rel_cost"].min()
    with pytest.raises(ValueError, match="at most one"):
        model.use(1, max_drop=0.1)


def test_use_errors_name_what_is_stored(tiny):
    backbone, bank, _, _, result = tiny
    model = DyCEModel(backbone, bank, result)
    n = len(result.configs)
    with pytest.raises(UnknownConfigError, match=rf"{n} are stored \(indices 0\.\.{n - 1}\)"):
        model.use(n)
    with pytest.raises(UnknownConfigError, match=r"lambda=0\.0123.*stored lambdas: \[0, 0\.0833333"):
        model.use(lam=0.0123)
    with pytest.raises(UnknownConfigError):
        model.use(1.5)
    assert isinstance(UnknownConfigError("x"), ValueError) and isinstance(UnknownConfigError("x"), LookupError)
    plain = DyCEModel(backbone, bank, result.configs)
    assert plain.lambdas is None
    with pytest.raises(UnknownConfigError, match="without lambdas"):
        plain.use(lam=0.5)


def test_configuration_that_does_not_fit_is_rejected(tiny):
    backbone, bank, _, _, _ = tiny
    P = len(backbone.positions)
    with pytest.raises(ResultError, match="has 2 positions, the backbone has 3"):
        DyCEModel(backbone, bank, [Config(np.array([0, 0]), np.array([0.5, 0.5]))])
    with pytest.raises(ResultError, match="exit type 5 at position 's1'.*only 2 exit types"):
        DyCEModel(backbone, bank, [Config(np.array([5] + [-1] * (P - 1)), np.array([0.5] + [np.nan] * (P - 1)))])
    sparse = ExitBank(backbone.positions, [[ExitType("mlp1")], [], [ExitType("mlp1")]], NUM_CLASSES)
    with pytest.raises(ResultError, match="no such exit"):
        DyCEModel(backbone, sparse, [Config(np.array([-1, 0, -1]), np.array([np.nan, 0.5, np.nan]))])


def test_result_metadata_is_checked_against_the_run(tiny):
    backbone, bank, _, _, result = tiny
    md = result.metadata
    check_result_fits(md, backbone, bank)
    for key, value, shown in (
        ("positions", ["s1", "s2", "x"], "positions=['s1', 's2', 'x'], but the run has positions=['s1', 's2', 's3']"),
        (
            "exit_types",
            ["mlp1", "mlp3x500"],
            "exit_types=['mlp1', 'mlp3x500'], but the run has exit_types=['mlp1', 'mlp2x16']",
        ),
        ("num_classes", 1000, "num_classes=1000, but the run has num_classes=6"),
        ("backbone", "resnet50", "backbone='resnet50', but the run has backbone='tiny'"),
    ):
        with pytest.raises(ResultError, match=re.escape(f"res.json was searched for {shown}")):
            check_result_fits({**md, key: value}, backbone, bank, source="res.json", run="the run")
    del md["positions"]
    with pytest.raises(ResultError, match="metadata has no 'positions'"):
        check_result_fits(md, backbone, bank)


def test_load_checks_the_saved_result_against_the_run(tiny, tmp_path, monkeypatch):
    import extract.rundir

    backbone, bank, x, _, result = tiny
    monkeypatch.setattr(extract.rundir, "load_run", lambda run_dir, map_location="cpu": (backbone, bank, tiny_info()))
    path = tmp_path / "configs.json"
    result.save(path)
    model = DyCEModel.load(tmp_path / "run", path)
    assert model.lambdas == tuple(float(v) for v in result.lambdas) and model.configs == tuple(result.configs)
    assert torch.equal(model.use(2)(x[:8])[1], DyCEModel(backbone, bank, result).use(2)(x[:8])[1])
    other = SearchResult(result.table, result.configs, {**result.metadata, "exit_types": ["mlp1", "mlp3x500"]})
    other.save(tmp_path / "other.json")
    expected = (
        f"{tmp_path / 'other.json'} was searched for exit_types=['mlp1', 'mlp3x500'], "
        f"but {tmp_path / 'run'} has exit_types=['mlp1', 'mlp2x16']"
    )
    with pytest.raises(ResultError, match=re.escape(expected)):
        DyCEModel.load(tmp_path / "run", tmp_path / "other.json")


def test_load_refuses_results_searched_on_another_run(tiny, tmp_path, monkeypatch):
    """Same architecture, same names, other weights: only the provenance record tells them apart."""
    import extract.rundir

    backbone, bank, x, _, result = tiny
    other_backbone, other_bank = tiny_model(seed=7)
    monkeypatch.setattr(
        extract.rundir, "load_run", lambda run_dir, map_location="cpu": (other_backbone, other_bank, tiny_info())
    )
    result.save(tmp_path / "configs.json")
    with pytest.raises(ResultError, match=r"does not come from the run of the run .*backbone weights differ"):
        DyCEModel.load(tmp_path / "run", tmp_path / "configs.json")
    model = DyCEModel.load(tmp_path / "run", tmp_path / "configs.json", allow_mixed=True)
    assert model.provenance["backbone"] != result.metadata["provenance"]["backbone"]
    monkeypatch.setattr(extract.rundir, "load_run", lambda run_dir, map_location="cpu": (backbone, bank, tiny_info()))
    assert DyCEModel.load(tmp_path / "run", tmp_path / "configs.json").provenance == {
        **result.metadata["provenance"], "data": None
    }


# ---------------------------------------------------- run time == simulation
def test_runtime_equals_simulation_on_recorded_cache(tiny):
    backbone, bank, x, cache, result = tiny
    model = DyCEModel(backbone, bank, result)
    rows = compare_with_simulation(model, cache, x[cache.sample], result.configs)
    for i, (differ, borderline, executed, predicted) in enumerate(rows):
        assert differ == borderline, f"config {i}: {differ} samples differ, only {borderline} are borderline"
        assert executed == pytest.approx(predicted, rel=0.01), f"config {i}"
    # The random configurations really exit at several positions.
    assert len({tuple(simulate(cache, c).position[:50]) for c in result.configs}) > 5


def test_runtime_equals_simulation_on_searched_configurations(tiny):
    import dyce_search

    backbone, bank, x, cache, _ = tiny
    searched = dyce_search.run(cache, np.linspace(0.05, 0.95, 7))
    model = DyCEModel(backbone, bank, searched)
    for i, (differ, borderline, executed, predicted) in enumerate(
        compare_with_simulation(model, cache, x[cache.sample], searched.configs)
    ):
        assert differ == borderline, f"lambda {searched.lambdas[i]}"
        assert executed == pytest.approx(predicted, rel=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tiny):
    backbone, bank, x, _, result = tiny
    model = DyCEModel(backbone, bank, result)
    cpu = [model.use(i)(x) for i in range(len(result.configs))]
    model.cuda()
    for i, (logits, position) in enumerate(cpu):
        got_logits, got_position = model.use(i)(x.cuda())
        assert got_position.device.type == "cuda"
        assert (got_position.cpu() != position).float().mean() < 0.02
    model.cpu()


# ---------------------------------------------------------------- digits run
@pytest.fixture(scope="module")
def digits_run():
    if not (DIGITS_RUN / "cache-test.parquet").exists():
        pytest.skip("the shipped digits run (data/digits) is not there")
    import dyce_search
    from extract.digits import load_splits

    calibration = ExitCache.read(DIGITS_RUN / "cache-calibration.parquet")
    test = ExitCache.read(DIGITS_RUN / "cache-test.parquet")
    result = dyce_search.run(calibration, np.linspace(0.0, 1.0, 11))
    split = load_splits()["test"]
    # cache rows carry scikit-learn sample ids; find each one's image in the split
    rows = np.searchsorted(split.sample_ids, test.sample)
    assert np.array_equal(split.sample_ids[rows], test.sample)
    return test, result, split.images[torch.from_numpy(rows)]


def test_digits_run_loads_and_equals_simulation(digits_run, tmp_path):
    test, result, images = digits_run
    path = tmp_path / "configs.json"
    result.save(path)
    model = DyCEModel.load(DIGITS_RUN, path)
    assert model.lambdas == tuple(float(v) for v in result.lambdas)
    rows = compare_with_simulation(model, test, images, result.configs)
    for i, (differ, borderline, executed, predicted) in enumerate(rows):
        assert differ == borderline, f"lambda {result.lambdas[i]}: {differ} differ, {borderline} borderline"
        assert executed == pytest.approx(predicted, rel=0.01)


def test_digits_run_switches_by_certified_budget(digits_run):
    import dyce_search

    test, _, _ = digits_run
    calibration = ExitCache.read(DIGITS_RUN / "cache-calibration.parquet")
    validation, _ = dyce_search.split(test, (0.5, 0.5), seed=0, names=("validation", "test"))
    front = dyce_search.front(calibration, lambdas=np.linspace(0, 1, 11), progress=False)
    certified = dyce_search.select(front, validation, [0.02, 0.05, 0.1, 0.3])
    model = DyCEModel.load(DIGITS_RUN, certified)
    table = certified.table
    assert table["target"].iloc[model.active] == 0.02  # the strongest certificate first
    model.use(max_drop=0.1)
    fits = table[table["target"] <= 0.1]
    assert table["validation_rel_cost"].iloc[model.active] == fits["validation_rel_cost"].min()
    assert model.selection_basis.startswith("certified (delta=0.1, risk=accuracy)")
    with pytest.raises(UnknownConfigError, match="drop <= 0.01"):
        model.use(max_drop=0.01)


def test_digits_run_rejects_results_of_another_backbone(digits_run, tiny):
    _, _, _, _, tiny_result = tiny
    with pytest.raises(ResultError, match=r"was searched for .*, but .*digits has"):
        DyCEModel.load(DIGITS_RUN, tiny_result)
