"""Figures as reproducible files: the same figure gives the same bytes on every run.

A report is often regenerated and committed or diffed; a PDF that changes on
every run (matplotlib stamps it with the time of saving) hides the runs whose
figures really changed. Everything else matplotlib writes is already a
function of the figure: PDF object ids and font subsets do not depend on the
process (nor on ``PYTHONHASHSEED``), and the PNG writer adds no time chunk,
only ``Software`` (matplotlib's version, constant for one installation).

``SOURCE_DATE_EPOCH`` (https://reproducible-builds.org/specs/source-date-epoch/)
is honoured: when set, matplotlib writes that date as the PDF's CreationDate,
the fixed date a reproducible build asks for; unset, the PDF carries none.

Every figure the package writes goes through :func:`figure_bytes`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

#: Formats a report writes and their savefig options: PNG at a fixed
#: resolution (the figures' pixel size must not follow a user's rcParams).
FORMATS = {"png": {"dpi": 200}, "pdf": {}}


def source_date() -> float | None:
    """``SOURCE_DATE_EPOCH`` as seconds since the epoch, or None when unset.

    The one reading of the variable: figure dates and the report index's
    "Generated" line both follow it.

    Raises
    ------
    ValueError
        If it is set to something other than a non-negative integer.
    """
    text = os.environ.get("SOURCE_DATE_EPOCH")
    if not text:
        return None
    if not text.strip().isdigit():
        raise ValueError(f"SOURCE_DATE_EPOCH must be a non-negative integer (seconds since 1970), got {text!r}")
    return float(text)


def reproducible_metadata(fmt: str) -> dict:
    """``savefig(metadata=...)`` that keeps the file free of the time of saving.

    PDF: no CreationDate unless ``SOURCE_DATE_EPOCH`` is set (then matplotlib
    writes that one). PNG: nothing to remove.
    """
    if fmt == "pdf" and source_date() is None:
        return {"CreationDate": None}
    return {}


def figure_bytes(figure, fmt: str, **savefig) -> bytes:
    """The bytes of ``figure`` saved as ``fmt`` (``"png"``, ``"pdf"``, ...), free of the saving time.

    ``savefig`` keywords go to :meth:`matplotlib.figure.Figure.savefig`
    (e.g. ``dpi``); given ``metadata`` is merged over the reproducible one.
    """
    metadata = {**reproducible_metadata(fmt), **savefig.pop("metadata", {})}
    buf = io.BytesIO()
    figure.savefig(buf, format=fmt, metadata=metadata, **savefig)
    return buf.getvalue()


def save_figure_file(figure, path, **savefig) -> Path:
    """Write ``figure`` to ``path`` (format from the suffix) atomically and reproducibly; returns the path."""
    from dyce_search._io import write_bytes_atomic

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    options = {**FORMATS.get(fmt, {}), **savefig}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, figure_bytes(figure, fmt, **options))
    return path
