"""The digits demo repeats: equal caches and byte-identical archives from equal runs."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from dyce_search import ExitCache
from extract import digits
from extract.backbones.base import PositionInfo
from extract.exits import ExitBank, parse_exit_types
from extract.train import atomic_torch_save

ROOT = Path(__file__).resolve().parents[1]
ARCHIVES = ("backbone.pt", "exits.pt")
# A reduced run: the first samples of every split, one epoch each. Small enough
# to run twice in a few seconds, large enough to exercise every step (backbone
# training with shifts, exit distillation, recording, MACs).
SMALL = {"train": 192, "calibration": 64, "test": 64}


def _small_splits() -> dict:
    full = digits.load_splits()
    return {
        name: digits.DigitsSplit(s.images[: SMALL[name]], s.labels[: SMALL[name]], s.sample_ids[: SMALL[name]])
        for name, s in full.items()
    }


def _reduced_run(out: Path, monkeypatch) -> None:
    small = _small_splits()
    monkeypatch.setattr(digits, "load_splits", lambda: small)
    digits.run_demo(out, exit_epochs=1, backbone_epochs=1, progress=False)


def _assert_same_run(a: Path, b: Path) -> None:
    """Caches equal but for their creation time; archives and macs.json byte-identical."""
    for split in ("calibration", "test"):
        ca, cb = ExitCache.read(a / f"cache-{split}.parquet"), ExitCache.read(b / f"cache-{split}.parquet")
        # run_created is the wall-clock time of the run: the one field two equal runs never share
        cb.metadata["run_created"] = ca.metadata["run_created"]
        assert ca.equals(cb), split
    for name in (*ARCHIVES, "macs.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_equal_objects_give_identical_archives(tmp_path):
    state = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(3)}
    atomic_torch_save(state, tmp_path / "a" / "first.pt")
    atomic_torch_save({k: v.clone() for k, v in state.items()}, tmp_path / "b" / "second.pt")
    first, second = (tmp_path / "a" / "first.pt").read_bytes(), (tmp_path / "b" / "second.pt").read_bytes()
    assert first == second
    # no temporary (or final) file name inside: the archive's folder is torch's fixed one
    names = zipfile.ZipFile(tmp_path / "a" / "first.pt").namelist()
    assert {n.split("/")[0] for n in names} == {"archive"}
    assert torch.equal(torch.load(tmp_path / "b" / "second.pt", weights_only=True)["w"], state["w"])


def test_equal_exit_banks_give_identical_files(tmp_path):
    positions = [PositionInfo(f"p{i}", 16, 1, f"block{i}") for i in range(3)]
    banks = []
    for _ in range(2):
        torch.manual_seed(3)
        banks.append(ExitBank(positions, parse_exit_types("mlp1,mlp2x32"), 10))
    banks[0].save(tmp_path / "one.pt")
    banks[1].save(tmp_path / "two.pt")
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()


def test_reduced_digits_run_twice_is_identical(tmp_path, monkeypatch):
    _reduced_run(tmp_path / "one", monkeypatch)
    _reduced_run(tmp_path / "two", monkeypatch)
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    numerics = ExitCache.read(tmp_path / "one" / "cache-test.parquet").metadata["training"]["numerics"]
    # the record says what decided the numbers: here the fastest kernels, unless started portable
    assert numerics["torch"] == torch.__version__ and numerics["portable"] == digits.portable_environment()
    assert numerics["onednn"] == (not digits.portable_environment() and torch.backends.mkldnn.is_available())
    assert not torch.are_deterministic_algorithms_enabled()  # demo_numerics restored


def test_makefile_digits_target_offers_the_portable_environment():
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\ndigits:") :].split("\n\n")[0]
    for key, value in digits.PORTABLE_ENV.items():
        assert f"{key}={value}" in target


_SUBPROCESS_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import pytest
from test_digits_repro import _reduced_run
with pytest.MonkeyPatch.context() as mp:
    _reduced_run(Path(sys.argv[1]), mp)
"""


def _run_in_process(out: Path, extra_env: dict) -> None:
    env = {**os.environ, **digits.PORTABLE_ENV, **extra_env}
    code = _SUBPROCESS_RUN.format(tests=str(Path(__file__).parent))
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_portable_numerics_ignore_the_instruction_set(tmp_path):
    """Under PORTABLE_ENV the run does not change when the CPU offers fewer instructions.

    A lower instruction set is imitated on this machine: MKL limited to
    SSE4.2, oneDNN to SSE4.1 (unused by the demo, so it must not matter) and
    glibc's libm without its AVX2/FMA variants.
    """
    _run_in_process(tmp_path / "native", {})
    lower = {
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F",
    }
    _run_in_process(tmp_path / "lower", lower)
    _assert_same_run(tmp_path / "native", tmp_path / "lower")
    numerics = ExitCache.read(tmp_path / "lower" / "cache-test.parquet").metadata["training"]["numerics"]
    assert numerics["portable"] and numerics["cpu_capability"] == "DEFAULT"


@pytest.mark.parametrize("before", [True, False])
def test_demo_numerics_switches_only_onednn_and_restores_it(before):
    """Only oneDNN's on/off switch changes (no set_flags keyword that some torch releases lack)."""
    was = torch.backends.mkldnn.enabled
    tf32 = torch._C._get_onednn_allow_tf32() if hasattr(torch._C, "_get_onednn_allow_tf32") else None
    try:
        torch.backends.mkldnn.enabled = before
        with digits.demo_numerics():
            assert torch.backends.mkldnn.enabled == (before and not digits.portable_environment())
            assert torch.get_num_threads() == 1
        assert torch.backends.mkldnn.enabled == before
        if tf32 is not None:
            assert torch._C._get_onednn_allow_tf32() == tf32
    finally:
        torch.backends.mkldnn.enabled = was
