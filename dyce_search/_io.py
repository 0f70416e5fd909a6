"""Atomic file writes: nothing half-written ever stands under the final name.

Every writer in the package (caches, results, cost profiles, run directories,
checkpoints, shards) goes through :func:`atomic_target`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_target(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it over ``path`` when the block succeeds.

    The temporary file is created empty with mode 0666 less the umask (not
    ``tempfile.mkstemp``, whose 0600 would stick to the final file), flushed to
    disk and moved with ``os.replace`` so ``path`` holds either its previous
    content or the whole new file. On any exception the temporary file is
    removed and the exception propagates.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_target`)."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path, text: str) -> None:
    """UTF-8 text version of :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode("utf-8"))


def check_header(doc, fmt: str, version: int, source, error: type[Exception]) -> None:
    """Raise ``error`` unless ``doc`` is a JSON object of format ``fmt`` and version ``version``.

    Shared by every JSON document the package reads (results, cost profiles);
    ``source`` (a path or a description) starts each message.
    """
    if not isinstance(doc, dict):
        raise error(f"{source}: expected a JSON object at the top level, got {type(doc).__name__}")
    if doc.get("format") != fmt:
        raise error(f"{source}: field 'format' must be {fmt!r}, got {doc.get('format')!r}")
    if doc.get("version") != version:
        raise error(f"{source}: unsupported 'version' {doc.get('version')!r} (this reader knows {version})")
