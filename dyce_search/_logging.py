"""How the command-line tools show the package's log lines: ``-v`` / ``-q`` and plain lines on stderr.

Library code logs through named loggers (``logging.getLogger(__name__)``) and
never configures logging itself, so an application keeps its own setup. Every
``python -m`` tool adds the options with :func:`add_verbosity` and calls
:func:`setup_logging` on the parsed arguments: INFO lines by default (status
such as "exits: training ..."), only warnings and errors with ``-q``, DEBUG
lines with ``-v``. Data (tables, paths) stays on stdout.
"""

from __future__ import annotations

import logging
import sys

#: Top-level loggers of the project's packages; every module logs under one of them.
LOGGERS = ("dyce_search", "extract", "analysis")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (a test's capture, a redirect), not at setup."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):  # StreamHandler.__init__ assigns one; the property always follows sys.stderr
        pass


def add_verbosity(parser, quiet: str) -> None:
    """Add ``-v/--verbose`` and ``-q/--quiet`` to ``parser``; ``quiet`` says what else the tool leaves out."""
    parser.add_argument("-v", "--verbose", action="store_true", help="also debug log lines on stderr")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help=f"{quiet}; only warnings and errors on stderr")


def setup_logging(args) -> None:
    """Route the packages' log records to stderr as plain message lines at the level ``args`` asks for.

    Calling it again (several tool runs in one process) replaces the handler it installed before.
    """
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
            logger.removeHandler(handler)
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
