"""The on-disk layout of an exit cache: column names, Arrow types and the ``dyce`` metadata.

Everything here is about the Parquet file only; the in-memory checks live in
``_cache_checks``. docs/cache-format.md is the user-facing description and must
be kept in step with this module.
"""

from __future__ import annotations

import json
from numbers import Integral

import numpy as np
import pyarrow as pa

from .errors import CacheError

FORMAT = "dyce-exit-cache"
VERSION = 1
METADATA_KEY = b"dyce"

SAMPLE = "sample"
LABEL = "label"
FINAL_PRED = "final.pred"
FINAL_CONF = "final.conf"

#: The four columns every cache has, in file order, with their Arrow types.
FIXED_COLUMNS = {
    SAMPLE: pa.int64(),
    LABEL: pa.int32(),
    FINAL_PRED: pa.int32(),
    FINAL_CONF: pa.float32(),
}
PRED_TYPE = pa.int32()
CONF_TYPE = pa.float32()

#: Keys of the metadata that the format defines, in the order they are written.
#: Any other key is user metadata and is carried through unchanged.
STANDARD_KEYS = (
    "format",
    "version",
    "backbone",
    "weights",
    "dataset",
    "split",
    "num_classes",
    "synthetic",
    "positions",
    "exit_types",
    "exit_macs",
    "total_macs",
    "provenance",
)

#: Schema metadata key of the checksum the writer stores beside ``dyce``: a
#: SHA-256 of the canonical JSON of the ``dyce`` metadata. Parquet's page
#: checksums cover the data pages only, so without it a flipped byte in the
#: footer (a MAC count, a position name) would be read silently. It sits
#: outside the JSON so that a flipped byte in its own name cannot turn into a
#: new metadata key.
CHECKSUM_KEY = b"dyce.checksum"


def exit_column(p: int, exit_type: str, field: str) -> str:
    """Column name of one exit's ``pred`` or ``conf`` values, e.g. ``p3.mlp1.conf``."""
    return f"p{p}.{exit_type}.{field}"


def expected_columns(exit_types, available: np.ndarray) -> dict:
    """Ordered ``{column name: Arrow type}`` of a cache with the given exits.

    Exit columns go position-major, then exit type, ``pred`` before ``conf``.
    """
    cols = dict(FIXED_COLUMNS)
    for p, k in zip(*np.nonzero(available)):
        cols[exit_column(int(p), exit_types[k], "pred")] = PRED_TYPE
        cols[exit_column(int(p), exit_types[k], "conf")] = CONF_TYPE
    return cols


def _json_default(obj):
    # numpy scalars and arrays sneak into metadata built from computed values
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def to_json(metadata: dict) -> str:
    """Strict JSON (no NaN/inf, which other JSON readers reject) of the metadata."""
    try:
        return json.dumps(metadata, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CacheError(f"metadata is not JSON-serialisable: {exc}") from None


def metadata_checksum(metadata: dict) -> str:
    """The :data:`CHECKSUM_KEY` value of ``metadata``."""
    from .provenance import digest

    return digest(json.loads(to_json(metadata)))


def encode_metadata(metadata: dict) -> dict:
    """Arrow schema metadata holding the ``dyce`` JSON and its checksum."""
    return {METADATA_KEY: to_json(metadata).encode("utf-8"), CHECKSUM_KEY: metadata_checksum(metadata).encode("ascii")}


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def decode_metadata(schema_metadata, where: str) -> dict:
    """Parse and structurally check the ``dyce`` metadata of a Parquet file.

    Checks the metadata checksum (files written before checksums existed have
    none and are read as they are) and what is needed to know the columns and
    build the arrays; value checks (increasing MACs, ...) are the
    constructor's.

    Raises
    ------
    CacheError
        Naming ``where`` (the file) and the key at fault.
    """
    if not schema_metadata or METADATA_KEY not in schema_metadata:
        raise CacheError(f"{where}: no 'dyce' key in the Parquet schema metadata; not a dyce exit cache")
    try:
        md = json.loads(schema_metadata[METADATA_KEY].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(f"{where}: 'dyce' metadata is not valid JSON ({exc})") from None
    if not isinstance(md, dict):
        raise CacheError(f"{where}: 'dyce' metadata must be a JSON object, got {type(md).__name__}")
    if md.get("format") != FORMAT:
        raise CacheError(f"{where}: metadata format is {md.get('format')!r}, expected {FORMAT!r}")
    if md.get("version") != VERSION:
        raise CacheError(
            f"{where}: unsupported dyce-exit-cache version {md.get('version')!r} "
            f"(this dyce_search reads version {VERSION})"
        )
    stored = schema_metadata.get(CHECKSUM_KEY)
    if stored is not None and stored.decode("ascii", "replace") != metadata_checksum(md):
        raise CacheError(
            f"{where}: the 'dyce' metadata does not match its checksum {stored.decode('ascii', 'replace')!r}; "
            "the file's footer is corrupt (a changed byte in MACs, names or settings); restore the file from its source"
        )

    def bad(key, why):
        return CacheError(f"{where}: metadata {key!r} {why}")

    for key in ("num_classes", "total_macs"):
        if not _is_int(md.get(key)):
            raise bad(key, f"must be an integer, got {md.get(key)!r}")
    for key in ("positions", "exit_types", "exit_macs"):
        if not isinstance(md.get(key), list):
            raise bad(key, f"must be a list, got {md.get(key)!r}")
    for i, pos in enumerate(md["positions"]):
        if not isinstance(pos, dict) or not isinstance(pos.get("name"), str):
            raise bad("positions", f"entry {i} must be an object with a string 'name', got {pos!r}")
        if not _is_int(pos.get("backbone_macs")):
            raise bad(
                "positions",
                f"entry {i} ({pos['name']!r}) needs an integer 'backbone_macs', got {pos.get('backbone_macs')!r}",
            )
    for i, et in enumerate(md["exit_types"]):
        if not isinstance(et, dict) or not isinstance(et.get("name"), str):
            raise bad("exit_types", f"entry {i} must be an object with a string 'name', got {et!r}")
    from .provenance import check_record

    check_record(md.get("provenance"), f"{where}: metadata", CacheError)
    n_pos, n_types = len(md["positions"]), len(md["exit_types"])
    if len(md["exit_macs"]) != n_pos:
        raise bad("exit_macs", f"has {len(md['exit_macs'])} rows, expected one per position ({n_pos})")
    for p, row in enumerate(md["exit_macs"]):
        if not isinstance(row, list) or len(row) != n_types:
            raise bad("exit_macs", f"row {p} must be a list of {n_types} entries (one per exit type), got {row!r}")
        for k, v in enumerate(row):
            if v is not None and not _is_int(v):
                raise bad("exit_macs", f"[{p}][{k}] must be an integer or null, got {v!r}")
    return md


def check_columns(schema: pa.Schema, expected: dict, where: str) -> None:
    """Raise CacheError naming the first missing, extra, duplicated or mistyped column."""
    names = schema.names
    seen = set()
    for name in names:
        if name in seen:
            raise CacheError(f"{where}: column {name!r} appears more than once")
        seen.add(name)
    for name in expected:
        if name not in seen:
            raise CacheError(f"{where}: missing column {name!r} (the 'dyce' metadata says this exit exists)")
    for name in names:
        if name not in expected:
            raise CacheError(f"{where}: unexpected column {name!r} (not described by the 'dyce' metadata)")
    for name, typ in expected.items():
        got = schema.field(name).type
        if got != typ:
            raise CacheError(f"{where}: column {name!r} has type {got}, expected {typ}")
