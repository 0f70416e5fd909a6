"""``python -m dyce_search``: see :mod:`dyce_search.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
