"""``python -m extract --config FILE``: TOML options under the flags, and the effective config a run writes."""

import argparse
import json
import tomllib

import pytest

from extract.config import ConfigError, dump_toml, load_config


def _parser():
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--splits", nargs="+")
    p.add_argument("--import", dest="imports", action="append", default=[])
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--mode", choices=["a", "b"])
    return p


def _key(action):
    longs = [o[2:] for o in action.option_strings if o.startswith("--")]
    return longs[0] if longs else action.dest


def _load(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return load_config(path, _parser(), key=_key, skip=("help",))


def test_dump_toml_round_trips_flat_values():
    values = {
        "model": "res\"net\\50\n\tü", "epochs": 5, "lr": 3e-4, "tiny": 1e-300, "third": 0.1 + 0.2, "neg": -2,
        "no-augment": False, "flag": True, "splits": ["train", "val"], "ints": [1, 2], "empty": [],
        "control": "a\x01b\x7f", "inf": float("inf"),
    }
    text = dump_toml({**values, "unset": None}, header="first line\nsecond")
    assert text.startswith("# first line\n# second\n") and "unset" not in text
    assert tomllib.loads(text) == values
    with pytest.raises(TypeError, match="'bad key'"):
        dump_toml({"bad key": 1})
    with pytest.raises(TypeError, match="'x'"):
        dump_toml({"x": {"nested": 1}})


def test_load_config_maps_keys_to_the_parser_defaults(tmp_path):
    got = _load(tmp_path, 'model = "resnet50"\nepochs = 3\nlr = 1\nsplits = ["val"]\nimport = ["m"]\nno_augment = true\n')
    assert got == {"model": "resnet50", "epochs": 3, "lr": 1.0, "splits": ["val"], "imports": ["m"],
                   "no_augment": True}
    assert isinstance(got["lr"], float)


@pytest.mark.parametrize(
    "text, message",
    [
        ('epochs = "two"', "key 'epochs' must be an integer, got 'two'"),
        ("epochs = true", "key 'epochs' must be an integer, got True"),
        ("epochs = 2.5", "key 'epochs' must be an integer, got 2.5"),
        ('lr = "x"', "key 'lr' must be a number, got 'x'"),
        ('splits = "train"', "key 'splits' must be a list of strings, got 'train'"),
        ("no-augment = 1", "key 'no-augment' must be true or false, got 1"),
        ('mode = "c"', "key 'mode' must be one of ['a', 'b'], got 'c'"),
        ("bogus = 1", "unknown key 'bogus' = 1; keys are the options: epochs, import, lr, mode, model, no-augment, splits"),
        ("help = true", "unknown key 'help'"),
        ("epochs = 1\nepochs_ = 1", "unknown key 'epochs_'"),
        ("[table]\nepochs = 1", "unknown key 'table'"),
        ("no-augment = true\nno_augment = true", "key 'no_augment' is given twice"),
    ],
)
def test_bad_keys_and_values_name_file_key_and_value(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text + "\n")
    assert str(info.value).startswith(f"{tmp_path / 'run.toml'}: ") and message in str(info.value)


def test_unreadable_or_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="--config .*missing.toml: cannot read it"):
        load_config(tmp_path / "missing.toml", _parser(), key=_key)
    with pytest.raises(ConfigError, match="run.toml: not a TOML file"):
        _load(tmp_path, "epochs = \n")


# ------------------------------------------------------------------ the CLI


@pytest.fixture
def tiny():
    """The tiny registered backbone and its CLI helpers (needs torch; the tests above do not)."""
    pytest.importorskip("torch")
    import _extract_tiny

    return _extract_tiny


def run_cli(capsys, *argv):
    from _extract_tiny import run_cli

    return run_cli(capsys, *argv)


def one_error_line(err):
    from _extract_tiny import one_error_line

    return one_error_line(err)


def test_cli_takes_options_from_the_file_and_flags_win(capsys, tmp_path, tiny):
    config = tmp_path / "macs.toml"
    config.write_text('model = "tinynet"\nimport = ["_extract_tiny"]\nexit_types = "mlp1"\nmacs = true\njson = true\n')
    code, out, err = run_cli(capsys, "--config", config)
    assert code == 0, err
    assert json.loads(out)["exit_types"] == ["mlp1"]
    code, out, err = run_cli(capsys, "--config", config, "--exit-types", "mlp2x5")  # the flag wins
    assert code == 0 and json.loads(out)["exit_types"] == ["mlp2x5"]


def test_cli_bad_file_is_one_error_line(capsys, tmp_path, tiny):
    config = tmp_path / "run.toml"
    config.write_text('model = "tinynet"\nepochs = "two"\n')
    with pytest.raises(SystemExit) as info:
        run_cli(capsys, "--config", config)
    assert info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {config}: key 'epochs' must be an integer, got 'two'"), line
    with pytest.raises(SystemExit):
        run_cli(capsys, "--epochs", "2")
    assert "required: model" in one_error_line(capsys.readouterr().err)


def test_an_option_from_the_file_that_the_mode_ignores_is_named_with_the_file(capsys, tmp_path, tiny):
    config = tmp_path / "run.toml"
    config.write_text('data = "somewhere"\n')
    code, _, err = run_cli(capsys, "digits", "--config", config, "--out", tmp_path / "d", "--quiet")
    assert code == 2
    assert f"does not use --data (in {config}); drop it" in one_error_line(err)


def test_run_folder_config_repeats_the_run(capsys, tmp_path, tiny):
    data = tiny.make_image_folder(tmp_path / "data", classes=3, per_class=2)
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "tinynet", "--import", "_extract_tiny", "--data", data, "--weights", "none", "--out", out,
        "--epochs", "1", "--batch-size", "6", "--workers", "0", "--exit-types", "mlp1", "--device", "cpu", "--quiet",
    )
    assert code == 0, err
    written = (out / "config.toml").read_text()
    effective = tomllib.loads(written)
    assert effective == {
        "model": "tinynet", "data": str(data), "weights": "none", "splits": ["train", "val"], "train-split": "train",
        "exit-types": "mlp1", "epochs": 1, "batch-size": 6, "lr": 3e-4, "workers": 0, "num-classes": 3,
        "no-augment": False, "shard-size": 10_000, "hash-data": False, "keep-checkpoints": False, "seed": 0,
        "out": str(out), "device": "cpu", "import": ["_extract_tiny"],
    }
    # the file alone repeats the run: the rerun finds it done and writes the same file
    code, _, err = run_cli(capsys, "--config", out / "config.toml")
    assert code == 0 and "cache exists" in err, err
    assert (out / "config.toml").read_text() == written
    # a rerun with other settings is refused and leaves the recorded config alone
    code, _, err = run_cli(capsys, "--config", out / "config.toml", "--seed", "1", "--quiet")
    assert code == 2 and "choose another --out" in one_error_line(err)
    assert (out / "config.toml").read_text() == written
