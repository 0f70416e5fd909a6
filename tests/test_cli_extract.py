"""``python -m extract``: MACs table, one-line errors, the full pipeline on a tiny ImageFolder, load_run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import numpy as np

import _extract_tiny as tiny
from _extract_tiny import one_error_line, run_cli
from dyce_search import ExitCache
from extract import ExtractError
from extract.rundir import RunInfo, load_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--import", "_extract_tiny"]




def test_macs_table_needs_no_data(capsys):
    code, out, _ = run_cli(capsys, "resnet50", "--macs")
    assert code == 0
    assert "layer1.0" in out and "mlp5x1000" in out and "head" in out
    code, out, _ = run_cli(capsys, "resnet50", "--macs", "--json", "--exit-types", "mlp1")
    table = json.loads(out)
    assert len(table["positions"]) == 15 and table["exit_types"] == ["mlp1"]
    assert 4.0e9 < table["total_macs"] < 4.2e9  # torchvision: ResNet-50 is 4.09 GMACs
    # mlp1 on layer1.0 (256 channels): 256 x 1000 multiply-accumulates
    assert table["exit_macs"][0][0] == 256 * 1000


def test_macs_of_a_vision_transformer(capsys):
    code, out, _ = run_cli(capsys, "vit_tiny_patch16_224", "--macs")
    assert code == 0 and "blocks.10" in out and "mlp5x1000" in out
    code, out, _ = run_cli(capsys, "vit_tiny_patch16_224", "--macs", "--json", "--exit-types", "mlp1,mlp1-token")
    table = json.loads(out)
    assert len(table["positions"]) == 11 and table["exit_types"] == ["mlp1", "mlp1-token"]
    assert 1.2e9 < table["total_macs"] < 1.3e9  # attention included
    assert table["exit_macs"][0] == [192 * 1000, 192 * 1000]  # exits read the 192-wide embedding


def test_per_backbone_defaults_come_from_the_registry(capsys, monkeypatch):
    import extract.digits  # noqa: F401  registers "digits" on import: before the copy, so the restore keeps it
    from extract.backbones import registry

    monkeypatch.setattr(registry, "_USER", dict(registry._USER))
    registry.register_backbone("tiny7", lambda weights, num_classes: tiny.factory(weights, num_classes),
                               num_classes=7, exit_types="mlp2x5")
    code, out, _ = run_cli(capsys, "tiny7", "--macs", "--json")
    table = json.loads(out)
    assert code == 0 and table["exit_types"] == ["mlp2x5"]
    assert table["exit_macs"][0] == [8 * 5 + 5 * 7]  # 8 channels -> 5 hidden -> 7 classes
    code, out, _ = run_cli(capsys, "digits", "--macs", "--json")
    assert json.loads(out)["exit_types"] == ["mlp1", "mlp2x32", "mlp2x64"]


def test_unknown_model_lists_the_supported_ones(capsys):
    code, _, err = run_cli(capsys, "resnet9000", "--macs")
    assert code == 2
    line = one_error_line(err)
    assert "resnet9000" in line and "resnet50" in line and "convnextv2" in line


def test_missing_or_empty_data(capsys, tmp_path):
    code, _, err = run_cli(capsys, "resnet18", "--weights", "none")
    assert code == 2 and "--data" in one_error_line(err)
    code, _, err = run_cli(capsys, "resnet18", "--weights", "none", "--data", tmp_path / "nowhere")
    assert code == 2 and "does not exist" in one_error_line(err)
    (tmp_path / "empty" / "val" / "class0").mkdir(parents=True)
    code, _, err = run_cli(capsys, "resnet18", "--weights", "none", "--data", tmp_path / "empty", "--splits", "val")
    assert code == 2 and "no images" in one_error_line(err)
    code, _, err = run_cli(capsys, "resnet18", "--weights", "none", "--data", tmp_path / "empty", "--splits", "test")
    assert code == 2 and "no 'test' split" in one_error_line(err)


def test_bad_weights_and_class_count(capsys, tmp_path):
    data = tiny.make_image_folder(tmp_path / "data", classes=3, per_class=2)
    out = tmp_path / "run"
    common = [*TINY, "--data", data, "--out", out, "--splits", "val", "--quiet"]
    code, _, err = run_cli(capsys, "tinynet", "--weights", tmp_path / "missing.pt", *common)
    assert code == 2 and "no such checkpoint" in one_error_line(err)
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    code, _, err = run_cli(capsys, "tinynet", "--weights", tmp_path / "other.pt", *common)
    assert code == 2 and "another architecture" in one_error_line(err)
    torch.save(tiny.TinyNet(num_classes=5).state_dict(), tmp_path / "five.pt")
    code, _, err = run_cli(capsys, "tinynet", "--weights", tmp_path / "five.pt", *common)
    assert code == 2 and "5 classes" in one_error_line(err)
    code, _, err = run_cli(capsys, "tinynet", "--weights", "none", "--num-classes", "4", *common)
    assert code == 2 and "3 class folders" in one_error_line(err)
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_full_pipeline_on_a_tiny_image_folder(capsys, tmp_path):
    data = tiny.make_image_folder(tmp_path / "data", classes=3, per_class=4)
    out = tmp_path / "run"
    argv = [
        "tinynet", *TINY, "--data", data, "--weights", "none", "--out", out, "--epochs", "2",
        "--batch-size", "5", "--workers", "0", "--exit-types", "mlp1,mlp2x8", "--device", "cpu", "--shard-size", "4",
    ]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "backbone.pt", "cache-train.parquet", "cache-val.parquet", "config.toml", "exits.pt", "macs.json", "run.json"
    ]  # checkpoints/ went once exits.pt was written
    assert "exits: training" in err and str(out / "cache-val.parquet") in stdout
    info = RunInfo.load(out / "run.json")
    assert (info.backbone, info.weights, info.num_classes, info.input_size) == ("tinynet", None, 3, (3, 32, 32))
    assert info.splits == ("train", "val") and info.backbone_file and info.backbone_module == "_extract_tiny"
    assert [p["name"] for p in info.positions] == ["block0", "block1"]
    # the training record names the pipeline the exits were trained through (the registered one)
    assert info.training["augment"] is True
    assert info.training["transform"].startswith("Compose( RandomResizedCrop(size=(32, 32)")

    backbone, bank, info2 = load_run(out)
    assert info2 == info and bank.exit_types == ("mlp1", "mlp2x8") and not bank.training
    cache = ExitCache.read(out / "cache-val.parquet")
    assert cache.n_samples == 12 and cache.metadata["split"] == "val"
    np.testing.assert_array_equal(cache.sample, np.arange(12))
    np.testing.assert_array_equal(cache.label, np.repeat(np.arange(3), 4))
    # the loaded models reproduce the recorded cache
    from extract.record import record_split
    from extract.data import image_folder

    ds = image_folder(data, "val", tiny.transform(None))
    rec = record_split(backbone, bank, ds, bank.available, batch_size=12, progress=False)
    np.testing.assert_array_equal(rec.pred, cache.pred)
    np.testing.assert_array_equal(rec.final_pred, cache.final_pred)
    macs = json.loads((out / "macs.json").read_text())
    assert macs["total_macs"] == cache.total_macs

    # a rerun finds everything done and changes nothing
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.p*")}
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "using trained exits" in err and "cache exists" in err
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.p*")}
    # a run.json from before the training transform was recorded still reruns
    doc = json.loads((out / "run.json").read_text())
    del doc["training"]["transform"]
    (out / "run.json").write_text(json.dumps(doc))
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "cache exists" in err, err
    # another model into the same directory is refused
    code, _, err = run_cli(capsys, *argv[:-6], "--exit-types", "mlp1", "--quiet")
    assert code == 2 and "choose another --out" in one_error_line(err)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_no_augment_trains_on_the_eval_transform_and_records_it(capsys, tmp_path, monkeypatch):
    from extract.backbones import registry
    import extract.digits  # noqa: F401 - registers itself in the real registry, not in the copy below

    data = tiny.make_image_folder(tmp_path / "data", classes=3, per_class=2)
    monkeypatch.setattr(registry, "_USER", dict(registry._USER))
    registry.register_backbone("tiny-eval-only", lambda weights, num_classes: tiny.factory(weights, num_classes),
                               tiny.transform)
    argv = ["tiny-eval-only", *TINY, "--data", data, "--weights", "none", "--epochs", "1", "--batch-size", "6",
            "--workers", "0", "--exit-types", "mlp1", "--device", "cpu", "--quiet"]
    # registered without a training transform: augmenting is refused in one line, --no-augment works
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "a")
    assert code == 2 and "without a training transform" in one_error_line(err)
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "b", "--no-augment")
    assert code == 0, err
    training = RunInfo.load(tmp_path / "b" / "run.json").training
    assert training["augment"] is False
    assert training["transform"] == " ".join(repr(tiny.transform(None)).split())


def test_load_run_errors(tmp_path):
    with pytest.raises(ExtractError, match="no run.json"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text('{"format": "something-else"}')
    with pytest.raises(ExtractError, match="not a DyCE run file"):
        load_run(tmp_path)


def test_module_entry_point_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "extract", "resnet50", "--data", str(tmp_path / "absent"), "--weights", "none"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--batch-size", "-1"), ("--lr", "0")])
def test_bad_numbers_are_one_line_errors(capsys, flag, value):
    code, _, err = run_cli(capsys, "resnet18", "--data", "x", flag, value)
    assert code == 2 and flag in one_error_line(err)


def test_cuda_without_a_gpu_is_an_error(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    data = tiny.make_image_folder(tmp_path / "data", splits=("val",), classes=3, per_class=1)
    code, _, err = run_cli(capsys, "tinynet", *TINY, "--data", data, "--weights", "none", "--device", "cuda",
                           "--splits", "val", "--out", tmp_path / "run")
    assert code == 2 and "no CUDA device" in one_error_line(err)
