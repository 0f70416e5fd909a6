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
