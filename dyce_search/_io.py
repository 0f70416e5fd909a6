"""Atomic file writes: nothing half-written ever stands under the final name.

Every writer in the package (caches, results, cost profiles, run directories,
checkpoints, shards) goes through :func:`atomic_target`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError


def _temp_name(path: Path) -> Path:
    """``.{name}.{pid}.{token}.tmp`` beside ``path``: the temporary file of one writer."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: another user's live process
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of ``path`` left by writers that were killed (their pid is gone).

    Temporary files of live processes (concurrent writers, this one included)
    are kept. POSIX only: elsewhere a pid cannot be probed safely.
    """
    if os.name != "posix":
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")
    prefix = f".{path.name}."
    try:
        entries = [e.name for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return  # a missing folder: creating the temporary file reports it
    for name in entries:
        match = pattern.fullmatch(name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(path.parent / name)


@contextlib.contextmanager
def atomic_target(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it over ``path`` when the block succeeds.

    The temporary file ``.{name}.{pid}.{token}.tmp`` is created empty with
    mode 0666 less the umask (not ``tempfile.mkstemp``, whose 0600 would stick
    to the final file), flushed to disk and moved with ``os.replace`` so
    ``path`` holds either its previous content or the whole new file. On any
    exception the temporary file is removed and the exception propagates.
    Temporary files of ``path`` left by a killed writer (whose pid no longer
    runs) are removed first.
    """
    path = Path(path)
    _remove_stale_temps(path)
    tmp = _temp_name(path)
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


def check_writable(path, *, option: str | None = None, folder: bool = False) -> Path:
    """Raise :class:`~dyce_search.errors.OutputError` unless ``path`` can be written; return it as a Path.

    Meant for command-line output targets, before any long work. A file
    target (``folder=False``) must not be a folder and its folder must exist
    and accept a new file; a folder target (``folder=True``) must be a folder
    or not exist yet below a folder that accepts one. Acceptance is probed by
    creating and removing a temporary file named like those of
    :func:`atomic_target` (permission bits alone do not tell, e.g. for root
    or on read-only mounts). The message starts with ``option path``.
    """
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{where}: is a file, not a folder")
        existing = path
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        probe_dir = existing
    else:
        if path.is_dir():
            raise OutputError(f"{where}: is a folder; give a file name")
        probe_dir = path.parent
        if not probe_dir.exists():
            raise OutputError(f"{where}: folder {probe_dir} does not exist")
    if not probe_dir.is_dir():
        raise OutputError(f"{where}: {probe_dir} is not a folder")
    probe = _temp_name(probe_dir / (path.name or "output"))
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise OutputError(f"{where}: cannot write in {probe_dir} ({exc.strerror or exc})") from None
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return path


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_target`)."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path, text: str) -> None:
    """UTF-8 text version of :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode("utf-8"))


def check_header(doc, fmt: str, version, source, error: type[Exception]) -> None:
    """Raise ``error`` unless ``doc`` is a JSON object of format ``fmt`` and version ``version``.

    Shared by every JSON document the package reads (results, cost profiles);
    ``source`` (a path or a description) starts each message. ``version`` may
    be a tuple: every version the reader still understands.
    """
    if not isinstance(doc, dict):
        raise error(f"{source}: expected a JSON object at the top level, got {type(doc).__name__}")
    if doc.get("format") != fmt:
        raise error(f"{source}: field 'format' must be {fmt!r}, got {doc.get('format')!r}")
    known = version if isinstance(version, tuple) else (version,)
    found = doc.get("version")
    # bool is an int in Python; a JSON true is no version number
    if isinstance(found, bool) or found not in known:
        shown = " and ".join(str(v) for v in known)
        raise error(f"{source}: unsupported 'version' {found!r} (this reader knows {shown})")
