"""Deployment footprint: only the used exits are loaded, bundles round-trip without pickle, checkpoints go."""

import json
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import _extract_tiny as tiny  # noqa: E402
from _extract_tiny import one_error_line  # noqa: E402
from _simulation import quantile_configs  # noqa: E402
from dyce_search import ExitCache, SearchResult  # noqa: E402
from extract import ExtractError  # noqa: E402
from extract.bundle import export_bundle, load_bundle, read_manifest  # noqa: E402
from extract.data import image_folder  # noqa: E402
from extract.export import main as export_main  # noqa: E402
from extract.runtime import DyCEModel, used_exits  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tinynet run (three exit types at both positions) and a result that uses some of its exits."""
    from extract.cli import main

    root = tmp_path_factory.mktemp("bundle")
    data = tiny.make_image_folder(root / "data", classes=3, per_class=4)
    out = root / "run"
    code = main([
        "tinynet", "--import", "_extract_tiny", "--data", str(data), "--weights", "none", "--out", str(out),
        "--epochs", "1", "--batch-size", "6", "--workers", "0", "--exit-types", "mlp1,mlp2x8,mlp2x16",
        "--device", "cpu", "--splits", "val", "--train-split", "val", "--quiet",
    ])
    assert code == 0
    cache = ExitCache.read(out / "cache-val.parquet")
    configs = quantile_configs(cache, n=40)
    full = SearchResult.from_configs(cache, configs, np.linspace(0, 1, len(configs)), method="hand", threshold="quantile")
    # the empty configuration and two that enable one exit each: 2 of the bank's 6 exits
    rows = [0] + [i for i, c in enumerate(configs) if (np.asarray(c.exit_types) >= 0).sum() == 1][:2]
    assert len(rows) == 3
    result = full.take(rows)
    result.save(root / "result.json")
    x = torch.stack([image_folder(data, "val", tiny.transform(None))[i][0] for i in range(12)])
    return out, root / "result.json", result, x


def outputs(model, x):
    """(logits, exit positions) of every stored configuration and of the original model."""
    return [model.use(i)(x) for i in [None, *range(len(model.configs))]]


def assert_same(a, b):
    for (la, pa), (lb, pb) in zip(a, b, strict=True):
        assert torch.equal(la, lb) and torch.equal(pa, pb)


def test_load_keeps_only_the_used_exits_and_runs_alike(run):
    out, path, result, x = run
    full = DyCEModel.load(out, path, all_exits=True)
    model = DyCEModel.load(out, path)
    used = used_exits(result, full.exits)
    assert 1 <= len(used) < 6 and {(p, k) for p, k, _ in model.exits.exits()} == used
    size, full_size = model.deployed_size(), full.deployed_size()
    assert size["exits"]["count"] == len(used) and full_size["exits"]["count"] == 6
    assert size["exits"]["parameters"] < full_size["exits"]["parameters"]
    assert size["backbone"] == full_size["backbone"] and size["bytes"] < full_size["bytes"]
    assert model.exits.exit_types == full.exits.exit_types  # type indices kept
    # the record describes the whole bank, digested before the unused exits went
    assert model.provenance == full.provenance
    assert model.provenance["exits"] == result.metadata["provenance"]["exits"]
    assert_same(outputs(model, x), outputs(full, x))


def test_bundle_round_trip_without_pickle(run, tmp_path, monkeypatch):
    out, path, result, x = run
    model = DyCEModel.load(out, path)
    summary = export_bundle(out, path, tmp_path / "model.safetensors")
    assert summary["deployed"] == model.deployed_size() and summary["run_exits"]["count"] == 6
    assert summary["run_exits"]["parameters"] == DyCEModel.load(out, path, all_exits=True).deployed_size()["exits"]["parameters"]
    raw = (tmp_path / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])  # a safetensors header: JSON, then raw tensor bytes
    assert {k.split(".")[0] for k in header if k != "__metadata__"} == {"backbone", "exits"}
    assert sum(1 for k in header if k.startswith("exits.") and k.endswith(".weight")) < 6 * 2

    def no_pickle(*a, **k):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = DyCEModel.load_bundle(tmp_path / "model.safetensors")
    assert loaded.provenance == model.provenance and loaded.lambdas == model.lambdas
    assert loaded.configs == model.configs and loaded.active == model.active
    assert loaded.deployed_size() == model.deployed_size()
    assert_same(outputs(loaded, x), outputs(model, x))
    manifest = read_manifest(tmp_path / "model.safetensors")
    assert manifest["backbone"]["name"] == "tinynet" and manifest["result"] == result.to_dict()


def _rewrite(src, dst, edit_tensors=None, edit_manifest=None):
    from safetensors.torch import load_file, save_file

    tensors = load_file(src)
    manifest = read_manifest(src)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_manifest:
        edit_manifest(manifest)
    save_file(tensors, dst, metadata={"dyce-bundle": json.dumps(manifest)})


def test_a_modified_bundle_is_refused(run, tmp_path):
    out, path, _, _ = run
    good = tmp_path / "good.safetensors"
    export_bundle(out, path, good)

    def bump_exit(t):
        key = next(k for k in t if k.startswith("exits.") and k.endswith("weight"))
        t[key] = t[key] + 1e-3

    def bump_backbone(t):
        key = next(k for k in t if k.startswith("backbone.") and k.endswith("weight"))
        t[key] = t[key] * 1.001

    def bump_threshold(m):
        entry = next(e for e in m["result"]["configurations"] if any(v is not None for v in e["thresholds"]))
        p = next(i for i, v in enumerate(entry["thresholds"]) if v is not None)
        entry["thresholds"][p] = entry["thresholds"][p] * 0.5

    for name, edits, field in [
        ("exit", {"edit_tensors": bump_exit}, "exits"),
        ("backbone", {"edit_tensors": bump_backbone}, "backbone"),
        ("threshold", {"edit_manifest": bump_threshold}, "manifest"),
    ]:
        bad = tmp_path / f"{name}.safetensors"
        _rewrite(good, bad, **edits)
        with pytest.raises(ExtractError, match=rf"digests of {field} differ"):
            load_bundle(bad)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ExtractError, match="not a readable safetensors file"):
        load_bundle(truncated)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ExtractError, match="not a DyCE bundle"):
        load_bundle(tmp_path / "plain.safetensors")


def test_export_cli(run, tmp_path, capsys):
    out, path, _, _ = run
    target = tmp_path / "m.safetensors"
    assert export_main([str(out), str(path), "--out", str(target)]) == 0
    stdout, err = capsys.readouterr()
    assert stdout.strip() == str(target) and target.is_file()
    assert target.stat().st_mode == path.stat().st_mode  # the shared writer's permissions, not 0600
    assert "of 6 exits" in err and "bytes" in err
    assert export_main([str(out), str(path), "--out", str(tmp_path / "m.json"), "--json"]) == 0
    stdout, _ = capsys.readouterr()
    assert json.loads(stdout)["deployed"]["exits"]["count"] < 6
    assert export_main([str(out), str(path), "--out", str(tmp_path)]) == 2
    assert "--out" in one_error_line(capsys.readouterr().err)
    assert export_main([str(tmp_path / "norun"), str(path), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "run.json" in one_error_line(capsys.readouterr().err)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_checkpoints_go_once_the_exits_are_final_unless_kept(run, tmp_path, capsys):
    out, _, _, _ = run
    assert (out / "exits.pt").is_file() and not (out / "checkpoints").exists()
    data = tiny.make_image_folder(tmp_path / "data", splits=("val",), classes=3, per_class=2)
    argv = ["tinynet", "--import", "_extract_tiny", "--data", data, "--weights", "none", "--out", tmp_path / "run",
            "--epochs", "1", "--batch-size", "6", "--workers", "0", "--exit-types", "mlp1", "--device", "cpu",
            "--splits", "val", "--train-split", "val", "--quiet"]
    code, _, err = tiny.run_cli(capsys, *argv, "--keep-checkpoints")
    assert code == 0, err
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    code, _, err = tiny.run_cli(capsys, *argv)  # a rerun without the flag: exits are final, the checkpoint goes
    assert code == 0, err
    assert not (tmp_path / "run" / "checkpoints").exists() and (tmp_path / "run" / "exits.pt").is_file()
