"""Exceptions raised by ``extract`` on bad input.

:class:`ExtractError` derives from :class:`dyce_search.DyceError` (and so from
:class:`ValueError`), so a CLI that prints every ``DyceError`` in one line also
covers the extraction side.
"""

from dyce_search.errors import DyceError


class ExtractError(DyceError):
    """A backbone name, weights spec, checkpoint, exit spec or input does not fit.

    The message names the value, file or key at fault.
    """
