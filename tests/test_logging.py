"""Log lines of the library and the CLIs' -v/-q; numba compilation kept out of reported search times."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

import numba
import pytest

from dyce_search._kernels import warmup
from dyce_search._logging import add_verbosity, setup_logging
from dyce_search.result import load_result


@pytest.fixture
def restore_loggers():
    """setup_logging changes process-wide loggers; put them back after the test."""
    names = ("dyce_search", "extract", "analysis")
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names}
    yield
    for n, (level, handlers) in saved.items():
        logger = logging.getLogger(n)
        logger.setLevel(level)
        logger.handlers[:] = handlers


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_verbosity(parser, quiet="no bars")
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("argv, shown", [((), {"info", "warning"}), (("-q",), {"warning"}),
                                          (("--verbose",), {"debug", "info", "warning"})])
def test_cli_levels(capsys, restore_loggers, argv, shown):
    setup_logging(_args(*argv))
    setup_logging(_args(*argv))  # a second tool run in the process must not print every line twice
    for name in ("dyce_search.search", "extract.pipeline", "analysis.report"):
        logger = logging.getLogger(name)
        for level in ("debug", "info", "warning"):
            getattr(logger, level)(f"{name} {level}")
    out, err = capsys.readouterr()
    assert out == ""
    expected = [f"{name} {level}" for name in ("dyce_search.search", "extract.pipeline", "analysis.report")
                for level in ("debug", "info", "warning") if level in shown]
    assert err.splitlines() == expected


@pytest.fixture
def fresh_warmup(monkeypatch):
    """compile_kernels as in a new process: nothing warmed, nothing announced."""
    monkeypatch.setattr(warmup, "_warm", set())
    monkeypatch.setattr(warmup, "_announced", False)


def test_compiling_is_announced_once_and_loading_never(caplog, monkeypatch, fresh_warmup):
    compiled = numba.njit(lambda x: x + 1)
    compiled(1)  # already compiled: calling it again is no compilation
    kernels = {"hit": lambda: compiled(2),
               "miss": lambda: numba.njit(lambda x: x * 2)(3),
               "again": lambda: numba.njit(lambda x: x * 3)(3)}
    monkeypatch.setattr(warmup, "_exercise", lambda path: kernels[path[0]]())
    caplog.set_level(logging.INFO, logger="dyce_search")
    warmup.compile_kernels(("hit",))
    assert warmup.MESSAGE not in caplog.messages
    warmup.compile_kernels(("miss",))
    warmup.compile_kernels(("again",))
    assert caplog.messages.count(warmup.MESSAGE) == 1


def test_each_search_path_is_warmed_up_once_before_its_clock_starts(monkeypatch, fresh_warmup):
    import dyce_search
    from dyce_search.synthetic import make_cache

    warmed = []
    monkeypatch.setattr(warmup, "_exercise", warmed.append)
    cache = make_cache("resnet18", n_samples=200, n_classes=4)
    dyce_search.run(cache, [0.5], progress=False)
    dyce_search.run(cache, [0.2, 0.8], progress=False)
    dyce_search.run(cache, [0.5], method="single_pass", threshold="bounded", progress=False)
    dyce_search.cheapest(cache, [0.05], lambdas=[0.5], progress=False)
    dyce_search.front(cache, lambdas=[0.5], drops=[0.05], progress=False)
    assert warmed == [("run", "descent", "exact", False), ("run", "single_pass", "bounded", False), ("targets",)]


COLD_RUN = """
import sys
from dyce_search.cli import main
from dyce_search.synthetic import make_cache
cache, cold, warm = sys.argv[1:]
make_cache("resnet18", n_samples=4000).write(cache)
for out in (cold, warm):  # the same search twice in one process: the second finds the kernels compiled
    assert main([cache, "--lambdas", "0.2,0.5,0.8", "--out", out]) == 0
"""


@pytest.mark.slow
def test_a_cold_first_run_says_it_compiles_and_reports_search_time_only(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}  # an empty numba cache: a first run
    cold, warm = tmp_path / "cold.json", tmp_path / "warm.json"
    done = subprocess.run([sys.executable, "-c", COLD_RUN, str(tmp_path / "c.parquet"), str(cold), str(warm)],
                          env=env, capture_output=True, text=True, check=True)
    assert done.stderr.count(warmup.MESSAGE) == 1, done.stderr
    cold_result, warm_result = load_result(cold), load_result(warm)
    # Compiling takes tens of seconds, the search itself milliseconds: a generous factor tells them apart.
    assert cold_result.table["seconds"].max() < 20 * warm_result.table["seconds"].max()
    assert cold_result.metadata["search_seconds"] < 20 * warm_result.metadata["search_seconds"]
    # With the kernels in numba's cache, a new process loads them and says nothing.
    again = subprocess.run([sys.executable, "-c", COLD_RUN, str(tmp_path / "c.parquet"), str(cold), str(warm)],
                           env=env, capture_output=True, text=True, check=True)
    assert warmup.MESSAGE not in again.stderr


def test_a_cache_read_from_parquet_takes_the_kernels_of_one_made_in_memory(tmp_path):
    from dyce_search import ExitCache
    from dyce_search.synthetic import make_cache

    # A read-only array is another numba type: the warm-up's kernels would not fit a read cache.
    made = make_cache("resnet18", n_samples=50, n_classes=4)
    read = ExitCache.read(made.write(tmp_path / "c.parquet"))
    for name in ("label", "pred", "conf", "final_pred", "final_conf", "sample", "available"):
        assert getattr(read, name).flags.writeable, name
