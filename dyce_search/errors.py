"""Exceptions raised for bad input, and how the command-line tools report them.

All exceptions derive from :class:`DyceError` and from :class:`ValueError`, so
callers that already catch ``ValueError`` keep working. Every ``python -m``
tool of the project parses its options with :class:`CliParser` and runs its
body through :func:`run_cli`: bad input ends with one line ``error: ...`` on
stderr and exit status 2, Ctrl-C with one line and status 130.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import sys
import threading


class DyceError(ValueError):
    """Base class of every error this package raises on bad input."""


class CacheError(DyceError):
    """An exit cache file or in-memory cache is malformed.

    The message names the file, column or value at fault.
    """


class ResultError(DyceError):
    """A saved search result is malformed or does not fit the cache/model it is used with."""


class CostError(DyceError):
    """A cost model (MACs or a measured latency profile) is malformed or does not fit the cache."""


class OutputError(DyceError):
    """An output path cannot be written (a missing folder, a file where a folder is needed, no permission).

    The message names the path as the user gave it.
    """


#: What the command-line tools report as one line instead of a traceback.
USER_ERRORS = (DyceError, ValueError, OSError)

#: Exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED = 130


def print_cli_error(exc: BaseException | str) -> int:
    """Print ``exc`` on stderr as one ``error: ...`` line; return the CLI exit status, 2."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {message}", file=sys.stderr)
    return 2


def package_version() -> str:
    """The installed distribution's version (``dyce``), else the source tree's ``dyce_search.__version__``."""
    from importlib import metadata

    try:
        return metadata.version("dyce")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        from . import __version__

        return __version__


class CliParser(argparse.ArgumentParser):
    """The argument parser of every command-line tool: a usage error is one line, not the usage text.

    ``error()`` prints ``error: MESSAGE (see PROG --help)`` on stderr and
    exits with status 2; ``--help`` still prints the full help. Every tool
    gets ``--version`` here, so they all report the same package version.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s (dyce {package_version()})",
                          help="print the package version and exit")

    def error(self, message):
        print_cli_error(f"{message} (see {self.prog} --help)")
        self.exit(2)


def is_interrupt(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a KeyboardInterrupt or was raised because of one.

    Ctrl-C inside a numba-compiled call surfaces as a ``SystemError`` whose
    ``__cause__`` (or ``__context__``) chain holds the ``KeyboardInterrupt``.
    """
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        todo += [e.__cause__, e.__context__]
    return False


@contextlib.contextmanager
def _interrupts_kept():
    """Keep a Ctrl-C that Python would otherwise print and drop; yields the list of those kept.

    A KeyboardInterrupt raised inside a ctypes callback (llvmlite's, while
    numba compiles a kernel) is "ignored": printed through
    ``sys.unraisablehook`` and lost, and numba may then fail with an
    unrelated error. Here it is not printed but recorded, and delivered
    again a moment later as if Ctrl-C came again (from a timer thread: an
    interrupt raised in the hook itself would be dropped as well).
    """
    previous = sys.unraisablehook
    kept, timers = [], []

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            return previous(unraisable)
        kept.append(unraisable.exc_value)
        timers.append(threading.Timer(0.01, _thread.interrupt_main))
        timers[-1].daemon = True
        timers[-1].start()

    sys.unraisablehook = hook
    try:
        yield kept
    finally:
        sys.unraisablehook = previous
        for timer in timers:
            timer.cancel()


def run_cli(body, args, *, errors: tuple = USER_ERRORS, interrupted: str = "interrupted") -> int:
    """``body(args)`` as a command-line tool runs it; returns the exit status.

    An exception of ``errors`` prints one ``error: ...`` line (status 2);
    Ctrl-C (see :func:`is_interrupt`), also one that came while numba
    compiled, prints ``interrupted`` as one line (status 130); anything else
    propagates with its traceback (a bug).
    """
    kept = []
    try:
        with _interrupts_kept() as kept:
            return body(args)
    except BaseException as exc:
        if kept or is_interrupt(exc):  # after a dropped Ctrl-C, numba may fail in its own way
            print(" ".join(interrupted.split()), file=sys.stderr)
            return INTERRUPTED
        if isinstance(exc, errors):
            return print_cli_error(exc)
        raise
