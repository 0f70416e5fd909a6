"""Errors, not tracebacks (issue 10): one-line usage errors, output targets checked before the work,
leftover temporary files, options a mode ignores, the lambda grid of analysis, and Ctrl-C."""

from __future__ import annotations

import importlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dyce_search.synthetic import make_cache

ROOT = Path(__file__).resolve().parents[1]
DIGITS_RUN = ROOT / "data" / "digits"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "usage:" not in err, err
    return lines[0]


def _call(main, argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        return e.code


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-errors") / "cache.parquet"
    make_cache("resnet18", n_samples=300, n_classes=10, seed=0).write(path)
    return path


def _forbid(monkeypatch, target: str, what: str) -> None:
    """Replace ``module.attr`` by a function failing the test: the long work must not start."""

    def fail(*args, **kwargs):
        raise AssertionError(f"{what} started before the bad input was reported")

    monkeypatch.setattr(target, fail)


# ----------------------------------------------------------------- 1. usage errors are one line


CLIS = {
    "dyce_search": ("dyce_search.cli", False),
    "extract": ("extract.cli", False),
    "extract.latency": ("extract.latency", True),
    "extract.export": ("extract.export", True),
    "analysis": ("analysis.__main__", False),
    "analysis.run_notebooks": ("analysis.run_notebooks", False),
    "extract.backbones.table": ("extract.backbones.table", True),
}


def _main_of(cli: str):
    module, needs_torch = CLIS[cli]
    if needs_torch:
        pytest.importorskip("torch")
    return importlib.import_module(module).main


@pytest.mark.parametrize(
    "cli, argv, message",
    [
        ("dyce_search", ["c.parquet", "--bogus"], "unrecognized arguments: --bogus"),
        ("dyce_search", ["c.parquet", "--method", "nope"], "invalid choice: 'nope'"),
        ("dyce_search", ["c.parquet", "--max-drop", "0.1", "--max-cost", "0.5"], "not allowed with"),
        ("dyce_search", [], "required: CACHE"),
        ("extract", ["resnet18", "--epochs", "two"], "invalid int value: 'two'"),
        ("extract", ["resnet18", "--bogus"], "unrecognized arguments: --bogus"),
        ("extract.latency", ["run", "--out", "p.json", "--min-run-time", "x"], "invalid float value: 'x'"),
        ("extract.latency", ["run"], "required: --out"),
        ("extract.export", ["RUN", "RESULT"], "required: --out"),
        ("analysis", ["--out", "o", "--bogus"], "unrecognized arguments: --bogus"),
        ("analysis", ["--out", "o", "--risk", "nope"], "invalid choice: 'nope'"),
        ("analysis.run_notebooks", ["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_are_one_line_naming_help(capsys, cli, argv, message):
    assert _call(_main_of(cli), argv) == 2
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert message in line and f"python -m {cli} --help" in line, line
    assert out == ""


@pytest.mark.parametrize("cli", list(CLIS))
def test_help_still_prints_the_full_help(capsys, cli):
    assert _call(_main_of(cli), ["--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"usage: python -m {cli}") and "options:" in out and "--help" in out
    assert err == ""


@pytest.mark.parametrize("cli", list(CLIS))
def test_every_option_has_help_text(monkeypatch, cli):
    import argparse

    from dyce_search.errors import CliParser

    seen = []

    def capture(self, args=None, namespace=None):
        seen.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(CliParser, "parse_args", capture)
    assert _call(_main_of(cli), ["--help"]) == 0
    (parser,) = seen
    bare = [", ".join(a.option_strings) or a.dest for a in parser._actions
            if a.help != argparse.SUPPRESS and not (a.help or "").strip()]
    assert bare == [], f"python -m {cli}: options without help text: {bare}"


@pytest.mark.parametrize("module", ["extract", "extract.latency", "extract.export"])
@pytest.mark.parametrize("argv", [["--help"], ["--bogus"]])
def test_help_and_usage_errors_answer_without_importing_torch(module, argv):
    # torch takes seconds to import; the parser must answer before it is needed
    probe = (
        "import sys, importlib\n"
        f"main = importlib.import_module({module!r} if {module!r} != 'extract' else 'extract.cli').main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch', code, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stderr.splitlines()[-1] == f"no torch {0 if argv == ['--help'] else 2}", done.stderr


def test_module_entry_point_usage_error_is_one_line():
    done = subprocess.run([sys.executable, "-m", "dyce_search", "c.parquet", "--bogus"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: unrecognized arguments: --bogus (see python -m dyce_search --help)"]


# ------------------------------------------------- 2. output targets are checked before the work


def _bad_targets(tmp_path, suffix: str) -> dict:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / f"a-folder{suffix}").mkdir()
    return {
        "missing folder": tmp_path / "nope" / "deeper" / f"x{suffix}",
        "under a file": tmp_path / "a-file" / f"x{suffix}",
        "a folder": tmp_path / f"a-folder{suffix}",
    }


def _read_only_folder(tmp_path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return folder


@pytest.mark.parametrize("case", ["missing folder", "under a file", "a folder"])
def test_search_out_is_checked_before_the_search(capsys, monkeypatch, tmp_path, cache_file, case):
    from dyce_search.cli import main

    _forbid(monkeypatch, "dyce_search.search.run", "the search")
    out = _bad_targets(tmp_path, ".json")[case]
    assert _call(main, [cache_file, "--out", out, "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--out {out}" in line and ".tmp" not in line, line
    assert not list(tmp_path.rglob("*.tmp"))


def test_search_out_in_a_read_only_folder(capsys, monkeypatch, tmp_path, cache_file):
    from dyce_search.cli import main

    out = _read_only_folder(tmp_path) / "r.json"
    _forbid(monkeypatch, "dyce_search.search.run", "the search")
    assert _call(main, [cache_file, "--out", out, "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--out {out}: cannot write in" in line, line


@pytest.mark.parametrize("case", ["missing parent is a file", "a file"])
def test_analysis_out_is_checked_before_the_caches_are_made(capsys, monkeypatch, tmp_path, case):
    from analysis.__main__ import main

    (tmp_path / "a-file").write_text("x")
    out = {"missing parent is a file": tmp_path / "a-file" / "report", "a file": tmp_path / "a-file"}[case]
    _forbid(monkeypatch, "dyce_search.synthetic.make_cache", "making the synthetic cache")
    assert _call(main, ["--synthetic", "resnet18", "--out", out, "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--out {out}" in line, line


def test_analysis_out_in_a_read_only_folder(capsys, monkeypatch, tmp_path):
    from analysis.__main__ import main

    out = _read_only_folder(tmp_path)
    _forbid(monkeypatch, "dyce_search.synthetic.make_cache", "making the synthetic cache")
    assert _call(main, ["--synthetic", "resnet18", "--out", out, "--quiet"]) == 2
    assert f"--out {out}: cannot write in" in _one_error_line(capsys.readouterr().err)


def test_check_writable_accepts_what_can_be_written(tmp_path):
    from dyce_search._io import check_writable

    assert check_writable(tmp_path / "new.json") == tmp_path / "new.json"
    assert check_writable(tmp_path / "a" / "b", folder=True) == tmp_path / "a" / "b"
    assert check_writable(tmp_path, folder=True) == tmp_path
    assert sorted(tmp_path.iterdir()) == []  # the probes are gone, nothing was created


def test_extract_out_is_checked_before_the_work(capsys, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import _extract_tiny as tiny

    from extract.cli import main

    (tmp_path / "a-file").write_text("x")
    data = tiny.make_image_folder(tmp_path / "data", splits=("val",), classes=3, per_class=1)
    _forbid(monkeypatch, "extract.pipeline.run_pipeline", "the extraction")
    _forbid(monkeypatch, "extract.digits.run_demo", "the digits demo")
    out = tmp_path / "a-file" / "run"
    argv = ["tinynet", "--import", "_extract_tiny", "--data", data, "--weights", "none", "--splits", "val",
            "--device", "cpu", "--out", out, "--quiet"]
    assert _call(main, argv) == 2
    assert f"--out {out}: " in _one_error_line(capsys.readouterr().err)
    assert _call(main, ["digits", "--out", tmp_path / "a-file", "--quiet"]) == 2
    assert f"--out {tmp_path / 'a-file'}: is a file" in _one_error_line(capsys.readouterr().err)


def test_latency_out_is_checked_before_timing(capsys, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    from extract.latency import main

    _forbid(monkeypatch, "extract.latency.measure_latency", "the timing")
    out = tmp_path / "nope" / "profile.json"
    assert _call(main, [DIGITS_RUN, "--out", out, "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--out {out}: folder {out.parent} does not exist" in line, line


# ------------------------------------------ 3. temporary files of killed writers are cleaned up


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()  # reaped: the pid runs nothing now
    return done.pid


def test_leftover_temporary_files_of_dead_writers_are_removed(tmp_path):
    from dyce_search._io import write_text_atomic

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        target = tmp_path / "result.json"
        stale = tmp_path / f".result.json.{dead}.0badc0de.tmp"
        kept = [
            tmp_path / f".result.json.{os.getpid()}.12345678.tmp",  # this process: maybe a writer in another thread
            tmp_path / f".result.json.{live.pid}.abcdef01.tmp",  # a concurrent writer
            tmp_path / f".other.json.{dead}.0badc0de.tmp",  # another target's
            tmp_path / ".result.json.notes.tmp",  # not a writer's temporary file
        ]
        for path in (stale, *kept):
            path.write_text("half")
        write_text_atomic(target, "whole")
        assert target.read_text() == "whole"
        assert not stale.exists()
        assert all(p.exists() for p in kept)
    finally:
        live.kill()
        live.wait()


# -------------------------------------------- 4. the latency profile goes through atomic_target


def test_latency_profile_is_written_through_the_shared_atomic_helper(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import numpy as np

    import dyce_search._io as io
    from dyce_search import Costs
    from extract.latency import save_profile

    targets = []
    real = io.atomic_target

    def recording(path):
        targets.append(Path(path))
        return real(path)

    monkeypatch.setattr(io, "atomic_target", recording)
    stale = tmp_path / f".profile.json.{_dead_pid()}.0badc0de.tmp"
    stale.write_text("half")
    path = tmp_path / "profile.json"
    save_profile(Costs(np.ones(3), np.ones((2, 1)), unit="ms"), path, measurement={"device": "cpu"})
    assert targets == [path]
    assert Costs.load(path).unit == "ms"
    assert not stale.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


# ---------------------------------------------------- 5. extract digits rejects ignored options


def test_digits_rejects_the_options_it_ignores(capsys, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    from extract.cli import main

    _forbid(monkeypatch, "extract.digits.run_demo", "the digits demo")
    argv = ["digits", "--device", "cuda", "--data", "/nonexistent", "--lr", "0.5", "--weights", "x", "--splits", "a",
            "--exit-types", "mlp1", "--workers", "0", "--no-augment", "--out", tmp_path / "run"]
    assert _call(main, argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == ("error: the digits demo does not use --data, --weights, --splits, --exit-types, --lr, --workers, "
                    "--no-augment, --device; drop them")
    assert not (tmp_path / "run").exists()


def test_digits_passes_the_options_it_uses(capsys, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    from extract.cli import main

    calls = []
    monkeypatch.setattr("extract.digits.run_demo", lambda out, **kw: calls.append((out, kw)))
    argv = ["digits", "--epochs", "2", "--backbone-epochs", "3", "--batch-size", "16", "--seed", "0",
            "--out", tmp_path / "run", "--quiet"]
    assert _call(main, argv) == 0
    (out, kw), = calls
    assert Path(out) == tmp_path / "run"
    assert (kw["exit_epochs"], kw["backbone_epochs"], kw["batch_size"], kw["seed"]) == (2, 3, 16, 0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resnet18", "--macs", "--seed", "0", "--data", "d"], "--macs (shapes only) does not use --data, --seed; drop them"),
        (["resnet18", "--data", "d", "--backbone-epochs", "3"], "extracting resnet18 does not use --backbone-epochs; drop it"),
        (["resnet18", "--data", "d", "--json"], "extracting resnet18 does not use --json; drop it"),
    ],
)
def test_other_modes_reject_the_options_they_ignore(capsys, argv, message):
    from extract.cli import main

    assert _call(main, argv) == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: {message}"


# ------------------------------------------------ 6. analysis parses lambdas like dyce_search


@pytest.mark.parametrize("grid", ["0:1:1e-12", "0:2:0.5", "0:1:x"])
def test_analysis_lambda_errors_are_those_of_dyce_search(capsys, monkeypatch, tmp_path, cache_file, grid):
    from analysis.__main__ import main as analysis_main
    from dyce_search.cli import main as search_main

    _forbid(monkeypatch, "dyce_search.synthetic.make_cache", "making the synthetic cache")
    assert _call(search_main, [cache_file, "--lambdas", grid]) == 2
    expected = _one_error_line(capsys.readouterr().err)
    assert _call(analysis_main, ["--synthetic", "resnet18", "--lambdas", grid, "--out", tmp_path / "o"]) == 2
    assert _one_error_line(capsys.readouterr().err) == expected
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ 7. Ctrl-C

_THREADING_LAYERS = ("omppool", "tbbpool", "workqueue")


def _in_parallel_numba(pid: int) -> bool:
    """Whether the process has started numba's threading layer, i.e. runs a parallel search kernel."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return any(f"{layer}." in maps for layer in _THREADING_LAYERS)


def _interrupt_when_searching(argv, cwd) -> subprocess.CompletedProcess:
    if not Path(f"/proc/{os.getpid()}/maps").exists():
        pytest.skip("needs /proc to see when the search runs")
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 240
        while not _in_parallel_numba(proc.pid):
            if proc.poll() is not None:
                pytest.fail(f"ended (status {proc.returncode}) before its search ran: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("the search did not start within 240 s")
            time.sleep(0.05)
        time.sleep(0.5)  # inside the kernels
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_ctrl_c_during_a_search_is_one_line_and_status_130(tmp_path):
    cache = tmp_path / "big.parquet"
    # about a minute of search on 2 cores: still running whenever the signal comes
    make_cache("resnet50", n_samples=5000, n_classes=100, seed=0).write(cache)
    done = _interrupt_when_searching(
        ["-m", "dyce_search", str(cache), "--lambdas", "0:1:0.001", "--out", str(tmp_path / "r.json"), "--quiet"],
        tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == ["interrupted"], done.stderr
    assert not (tmp_path / "r.json").exists() and not list(tmp_path.glob("*.tmp"))


def test_ctrl_c_during_analysis_is_one_line_and_status_130(tmp_path):
    done = _interrupt_when_searching(
        ["-m", "analysis", "--synthetic", "resnet50", "--synthetic-samples", "5000", "--lambdas", "0:1:0.001",
         "--no-iterative", "--out", str(tmp_path / "report"), "--quiet"],
        tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == ["interrupted"], done.stderr


def test_ctrl_c_inside_a_numba_call_or_a_ctypes_callback_is_kept(capsys):
    import ctypes

    from dyce_search.errors import run_cli

    def numba_like(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise SystemError("CPUDispatcher(<function descent>) returned a result with an exception set") from e

    assert run_cli(numba_like, None) == 130
    assert capsys.readouterr().err == "interrupted\n"

    def compiling(args):
        # Python prints and drops an exception raised in a ctypes callback (llvmlite's while numba compiles)
        ctypes.CFUNCTYPE(None)(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))()
        for _ in range(2000):  # the re-delivered interrupt ends this within ~10 ms; 20 s of margin for a busy machine
            time.sleep(0.01)
        return 0

    assert run_cli(compiling, None) == 130
    assert capsys.readouterr().err == "interrupted\n"

    def compiling_then_failing(args):
        # numba then fails in its own way ("no compiled object yet for <Library ...>")
        ctypes.CFUNCTYPE(None)(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))()
        raise RuntimeError("no compiled object yet")

    assert run_cli(compiling_then_failing, None) == 130
    assert capsys.readouterr().err == "interrupted\n"
    time.sleep(0.1)  # no interrupt is left pending once run_cli returned


@pytest.mark.parametrize("module", ["dyce_search", "extract", "extract.latency", "extract.export", "analysis",
                                    "analysis.run_notebooks"])
def test_every_tool_reports_the_package_version(module):
    from dyce_search.errors import package_version

    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"python -m {module} (dyce {package_version()})", done


def test_default_workers_fit_the_machine(monkeypatch):
    import extract.cli as cli

    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert cli.default_workers() == 2
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert cli.default_workers() == 4
