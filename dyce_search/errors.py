"""Exceptions raised for bad input.

All derive from :class:`DyceError` and from :class:`ValueError`, so callers
that already catch ``ValueError`` keep working.
"""


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


#: What the command-line tools report as one line instead of a traceback.
USER_ERRORS = (DyceError, ValueError, OSError)


def print_cli_error(exc: BaseException) -> int:
    """Print ``exc`` on stderr as one ``error: ...`` line; return the CLI exit status, 2."""
    import sys

    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {message}", file=sys.stderr)
    return 2
