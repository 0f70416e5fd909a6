"""Every file knows the run it came from: reruns, shards, caches, results, costs and footers (issue 10).

Each test reproduces one way files of different runs used to be combined
silently, on the tiny registered backbone of ``_extract_tiny``.
"""

import base64
import json
import re
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import _extract_tiny as tiny  # noqa: E402
from _extract_tiny import one_error_line, run_cli  # noqa: E402
from dyce_search import CacheError, CostError, Costs, ExitCache, ResultError, run  # noqa: E402
from dyce_search.provenance import MODEL_FIELDS, Origin, ProvenanceError, check_caches, digest  # noqa: E402
from dyce_search.synthetic import make_cache  # noqa: E402
from extract.rundir import RunInfo, load_run  # noqa: E402

TINY = ["--import", "_extract_tiny"]


def tiny_argv(data, out, *extra, epochs=1, splits=("val",)):
    return [
        "tinynet", *TINY, "--data", data, "--weights", "none", "--out", out, "--epochs", str(epochs),
        "--batch-size", "5", "--workers", "0", "--exit-types", "mlp1,mlp2x8", "--device", "cpu",
        "--shard-size", "4", "--splits", *splits, "--quiet", *extra,
    ]


@pytest.fixture
def data(tmp_path):
    return tiny.make_image_folder(tmp_path / "data", splits=("train", "val", "test"), classes=3, per_class=4)


def killed_recording(capsys, monkeypatch, argv):
    """Run the pipeline until every shard of the split is written, then stop it as Ctrl-C would."""
    import extract.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(extract.pipeline, "to_cache", interrupted)
        code, _, _ = run_cli(capsys, *argv)
    assert code == 130


def recorded_again(run_dir, split_data):
    """The split recorded from scratch by the exits the run folder holds now."""
    from extract.record import record_split

    backbone, bank, _ = load_run(run_dir)
    return record_split(backbone, bank, split_data, bank.available, batch_size=12, progress=False)


# ----------------------------------------------------------------- reruns
def test_a_rerun_with_other_training_settings_is_refused_and_run_json_kept(capsys, tmp_path, data, monkeypatch):
    """Cases 1 and 3: exits.pt removed (or kept) and the rerun asks for other epochs / lr."""
    out = tmp_path / "run"
    killed_recording(capsys, monkeypatch, tiny_argv(data, out))
    assert sorted(p.name for p in (out / "shards-val").iterdir())
    run_json = (out / "run.json").read_bytes()
    (out / "exits.pt").unlink()
    code, _, err = run_cli(capsys, *tiny_argv(data, out, epochs=2))
    line = one_error_line(err)
    assert code == 2 and "training.epochs=1" in line and "gives 2" in line and "choose another --out" in line
    code, _, err = run_cli(capsys, *tiny_argv(data, out, "--lr", "0.01", epochs=3))
    assert code == 2 and "training.epochs=1" in one_error_line(err)
    assert (out / "run.json").read_bytes() == run_json
    assert not (out / "cache-val.parquet").exists() and not (out / "exits.pt").exists()


def test_a_rerun_with_another_seed_is_refused_before_anything_is_recorded(capsys, tmp_path, data):
    """Case 2: --weights none with another --seed would build another random backbone."""
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *tiny_argv(data, out))
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, _, err = run_cli(capsys, *tiny_argv(data, out, "--seed", "1", splits=("test",)))
    assert code == 2 and "seed=0" in one_error_line(err)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # the same settings record another split into the same run
    code, _, err = run_cli(capsys, *tiny_argv(data, out, splits=("test",)))
    assert code == 0, err
    val, test = (ExitCache.read(out / f"cache-{s}.parquet") for s in ("val", "test"))
    check_caches(val, test, "val", "test")
    assert val.metadata["provenance"]["run"] == test.metadata["provenance"]["run"]
    assert val.metadata["provenance"]["data"] != test.metadata["provenance"]["data"]
    info = RunInfo.load(out / "run.json")
    assert info.splits == ("val", "test") and info.fingerprints["run"] == val.metadata["provenance"]["run"]


def test_changed_weights_file_is_refused(capsys, tmp_path, data):
    out, weights = tmp_path / "run", tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(tiny.TinyNet(3).state_dict(), weights)
    argv = [a if a != "none" else str(weights) for a in tiny_argv(data, out)]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    torch.manual_seed(1)
    torch.save(tiny.TinyNet(3).state_dict(), weights)
    code, _, err = run_cli(capsys, *[a if a != "val" else "test" for a in argv])
    assert code == 2 and "backbone weights differ" in one_error_line(err)


def test_a_cache_recorded_by_replaced_exits_is_refused(capsys, tmp_path, data):
    out = tmp_path / "run"
    assert run_cli(capsys, *tiny_argv(data, out))[0] == 0
    _, bank, _ = load_run(out)
    with torch.no_grad():
        next(bank.parameters()).add_(1.0)
    bank.save(out / "exits.pt")
    code, _, err = run_cli(capsys, *tiny_argv(data, out, splits=("val", "test")))
    line = one_error_line(err)
    assert code == 2 and "cache-val.parquet" in line and "exit weights and specs" in line


# ----------------------------------------------------------------- shards
def test_stale_shards_are_discarded_never_merged(capsys, tmp_path, data, monkeypatch):
    """Case 1 with the same settings: the exits changed after a killed recording."""
    from extract.data import image_folder

    out = tmp_path / "run"
    killed_recording(capsys, monkeypatch, tiny_argv(data, out))
    _, bank, _ = load_run(out)
    with torch.no_grad():
        for p in bank.parameters():
            p.mul_(-1.5)
    bank.save(out / "exits.pt")
    code, _, err = main_with_log(capsys, tiny_argv(data, out))
    assert code == 0, err
    assert "discarded 3 stale recording shard(s)" in err
    cache = ExitCache.read(out / "cache-val.parquet")
    fresh = recorded_again(out, image_folder(data, "val", tiny.transform(None)))
    np.testing.assert_array_equal(cache.conf, fresh.conf)
    np.testing.assert_array_equal(cache.pred, fresh.pred)


def main_with_log(capsys, argv):
    return run_cli(capsys, *[a for a in argv if a != "--quiet"])


def test_a_truncated_shard_is_one_error_line_naming_it(capsys, tmp_path, data, monkeypatch):
    out = tmp_path / "run"
    killed_recording(capsys, monkeypatch, tiny_argv(data, out))
    shard = sorted((out / "shards-val").glob("shard-*.npz"))[1]
    shard.write_bytes(shard.read_bytes()[:200])
    code, _, err = run_cli(capsys, *tiny_argv(data, out))
    line = one_error_line(err)
    assert code == 2 and shard.name in line and "delete it to re-record its rows" in line


# ------------------------------------------------------ caches and results
@pytest.fixture(scope="module")
def searched():
    cache = make_cache("resnet18", n_samples=400, seed=0)
    return cache, run(cache, [0.2, 0.6], progress=False)


def test_evaluate_refuses_a_test_cache_of_another_backbone_or_other_macs(searched):
    """Case 5, in Python: the same structure under another name, or 10x the MACs."""
    cache, result = searched
    test = make_cache("resnet18", n_samples=300, seed=1)
    result.evaluate(test)
    renamed = replace(test, metadata={**test.metadata, "backbone": "resnet34"})
    with pytest.raises(ResultError, match="backbones differ .'resnet18' vs 'resnet34'."):
        result.evaluate(renamed)
    tenfold = replace(test, backbone_macs=test.backbone_macs * 10, exit_macs=test.exit_macs * 10,
                      total_macs=test.total_macs * 10)
    with pytest.raises(ResultError, match=r"MACs differ \(total_macs: \d+ vs \d+\)"):
        result.evaluate(tenfold)
    record = dict(test.metadata["provenance"], backbone=digest("another training of resnet18"))
    other_model = replace(test, metadata={**test.metadata, "provenance": record})
    with pytest.raises(ResultError, match="backbone weights differ"):
        result.evaluate(other_model)
    table = result.evaluate(tenfold, allow_mixed=True)
    assert len(table) == len(result)


def test_select_refuses_a_validation_cache_of_another_run(searched):
    from dyce_search import select

    cache, result = searched
    validation = make_cache("resnet18", n_samples=300, seed=2)
    unknown = replace(validation, metadata={k: v for k, v in validation.metadata.items() if k != "provenance"})
    with pytest.raises(ResultError, match="has no provenance record"):
        select(result, unknown, 0.05)
    assert len(select(result, unknown, 0.05, allow_mixed=True)) == 1


def test_check_caches_names_both_files_and_the_field():
    a = make_cache("resnet18", n_samples=100, seed=0)
    b = make_cache("resnet18", n_samples=100, seed=1)
    check_caches(a, b, "a.parquet", "b.parquet")
    record = dict(b.metadata["provenance"], exits=digest("other exits"))
    c = replace(b, metadata={**b.metadata, "provenance": record})
    with pytest.raises(ProvenanceError) as info:
        check_caches(a, c, "a.parquet", "c.parquet")
    message = str(info.value)
    assert message.startswith("c.parquet (split val, run ")
    assert "does not come from the run of a.parquet" in message and "exit weights and specs differ" in message
    assert "--allow-mixed-runs" in message
    for key in MODEL_FIELDS:
        assert Origin.of_cache(a, "a").record[key] == Origin.of_cache(b, "b").record[key]


def test_costs_of_another_backbone_are_refused():
    """Case 6: a cost profile whose backbone is another model."""
    cache = make_cache("resnet18", n_samples=100, seed=0)
    costs = Costs.from_cache(cache)
    assert costs.check(cache) is costs and costs.provenance == cache.metadata["provenance"]
    other = Costs(costs.segment, costs.exit, unit="ms", backbone="resnet50")
    with pytest.raises(CostError, match="backbones differ .'resnet18' vs 'resnet50'."):
        other.check(cache)
    foreign = Costs(costs.segment, costs.exit, unit="ms", backbone="resnet18",
                    provenance=dict(costs.provenance, backbone=digest("other weights")))
    with pytest.raises(CostError, match="backbone weights differ"):
        foreign.check(cache)
    assert Costs.from_dict(json.loads(json.dumps(foreign.to_dict()))).provenance == foreign.provenance
    foreign.check(cache, allow_mixed=True)


# ---------------------------------------------------------------- footers
def _arrow_schema_span(raw: bytes):
    """Where the base64 ``ARROW:schema`` copy of the schema (and its metadata) sits in the footer."""
    # the IPC message starts with the continuation marker 0xFFFFFFFF, base64 "/////"
    start = raw.index(b"/////", raw.index(b"ARROW:schema"))
    return start, re.compile(rb"[A-Za-z0-9+/=]+").match(raw, start).end()


def test_a_flipped_footer_byte_in_the_metadata_is_a_cache_error(tmp_path):
    """Case 7: pyarrow reads the metadata from the footer, which page checksums do not cover."""
    cache = make_cache("resnet18", n_samples=50, seed=1)
    path = tmp_path / "c.parquet"
    cache.write(path)
    raw = path.read_bytes()
    s, e = _arrow_schema_span(raw)
    decoded = bytearray(base64.b64decode(raw[s:e]))
    at = decoded.index(b'"exit_macs": [[') + len(b'"exit_macs": [[')
    decoded[at] = ord("9") if decoded[at] != ord("9") else ord("8")  # one MAC count changes
    path.write_bytes(raw[:s] + base64.b64encode(bytes(decoded)) + raw[e:])
    with pytest.raises(CacheError, match=re.escape(f"{path}: the 'dyce' metadata does not match its checksum")):
        ExitCache.read(path)
    with pytest.raises(CacheError, match="does not match its checksum"):
        ExitCache.read_metadata(path)


def test_a_non_utf8_footer_is_a_cache_error_naming_the_file(tmp_path):
    cache = make_cache("resnet18", n_samples=50, seed=1)
    path = tmp_path / "c.parquet"
    cache.write(path)
    raw = bytearray(path.read_bytes())
    footer = len(raw) - 8 - int.from_bytes(raw[-8:-4], "little")
    at = raw.index(b"final.conf", footer)  # a column name in the Parquet schema
    raw[at] = 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match=re.escape(str(path))):
        ExitCache.read(path)


def test_metadata_checksum_round_trips_and_old_files_still_read(tmp_path):
    import pyarrow.parquet as pq

    cache = make_cache("resnet18", n_samples=50, seed=1)
    path = tmp_path / "c.parquet"
    cache.write(path)
    assert ExitCache.read(path).equals(cache)
    table = pq.read_table(path)
    md = dict(table.schema.metadata)
    assert md.pop(b"dyce.checksum")
    pq.write_table(table.replace_schema_metadata(md), tmp_path / "old.parquet")
    assert ExitCache.read(tmp_path / "old.parquet").equals(cache)
    md[b"dyce"] = md[b"dyce"].replace(b'"seed": 1', b'"seed": 2')
    md[b"dyce.checksum"] = b"0" * 32
    pq.write_table(table.replace_schema_metadata(md), tmp_path / "bad.parquet")
    with pytest.raises(CacheError, match="does not match its checksum"):
        ExitCache.read(tmp_path / "bad.parquet")


def test_changed_split_files_under_a_recorded_cache_are_refused(capsys, tmp_path, data):
    out = tmp_path / "run"
    assert run_cli(capsys, *tiny_argv(data, out))[0] == 0
    image = sorted((data / "val" / "class1").iterdir())[0]
    from PIL import Image

    Image.new("RGB", (50, 50), (10, 20, 30)).save(image)  # another size: the split's digest changes
    code, _, err = run_cli(capsys, *tiny_argv(data, out))
    line = one_error_line(err)
    assert code == 2 and "cache-val.parquet" in line and "other data" in line


def test_hash_data_identifies_splits_by_content(capsys, tmp_path, data):
    out = tmp_path / "run"
    assert run_cli(capsys, *tiny_argv(data, out, "--hash-data"))[0] == 0
    info = RunInfo.load(out / "run.json")
    assert info.fingerprints["data_identity"] == "files+contents"
    image = sorted((data / "val" / "class0").iterdir())[0]
    raw = bytearray(image.read_bytes())
    raw[-20] ^= 0xFF  # same name, same size, other bytes
    image.write_bytes(bytes(raw))
    code, _, err = run_cli(capsys, *tiny_argv(data, out, "--hash-data"))
    assert code == 2 and "other data" in one_error_line(err)
    code, _, err = run_cli(capsys, *tiny_argv(data, out))
    assert code == 2 and "data identified by='files+contents'" in one_error_line(err)


def test_shipped_digits_run_carries_matching_records():
    """data/digits: run.json, both caches and the weights on disk tell one story."""
    from pathlib import Path

    from extract import digits  # noqa: F401 - registers the backbone
    from extract.fingerprint import run_record

    run_dir = Path(__file__).resolve().parents[1] / "data" / "digits"
    backbone, bank, info = load_run(run_dir)
    record = run_record(backbone, bank, info)
    assert record["run"] == info.fingerprints["run"]
    for split in ("calibration", "test"):
        md = ExitCache.read_metadata(run_dir / f"cache-{split}.parquet")
        assert md["provenance"] == {**record, "data": info.fingerprints["data"][split]}
    assert info.training["numerics"]["torch"].startswith("2.14.1")


def test_search_cli_checks_test_and_cost_files_before_searching(tmp_path, capsys, monkeypatch):
    """Cases 5 and 6 from the command line: one error line naming both files, and no search ran."""
    import dyce_search.search
    from dyce_search.cli import main as search_main

    def no_search(*args, **kwargs):
        raise AssertionError("the search started before the files were checked")

    cache = make_cache("resnet18", n_samples=300, seed=0)
    test = make_cache("resnet18", n_samples=200, seed=1)
    paths = {name: tmp_path / f"{name}.parquet" for name in ("cal", "renamed", "tenfold")}
    cache.write(paths["cal"])
    replace(test, metadata={**test.metadata, "backbone": "resnet34"}).write(paths["renamed"])
    replace(test, backbone_macs=test.backbone_macs * 10, exit_macs=test.exit_macs * 10,
            total_macs=test.total_macs * 10).write(paths["tenfold"])
    Costs(Costs.from_cache(cache).segment, Costs.from_cache(cache).exit, unit="ms", backbone="resnet50").save(
        tmp_path / "ms.json")
    monkeypatch.setattr(dyce_search.search, "run", no_search)
    for extra, expected in (
        (["--test", paths["renamed"]], "backbones differ ('resnet18' vs 'resnet34')"),
        (["--test", paths["tenfold"]], "MACs differ (total_macs"),
        (["--select-on", paths["tenfold"], "--max-drop", "0.05"], "MACs differ (total_macs"),
        (["--costs", tmp_path / "ms.json"], "backbones differ ('resnet18' vs 'resnet50')"),
    ):
        code = search_main([str(paths["cal"]), "--lambdas", "0.5", "--quiet", *map(str, extra)])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and expected in line and "--allow-mixed-runs" in line, line
    monkeypatch.undo()
    code = search_main([str(paths["cal"]), "--lambdas", "0.5", "--quiet", "--test", str(paths["tenfold"]),
                        "--allow-mixed-runs"])
    assert code == 0
