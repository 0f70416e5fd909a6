"""Where a file came from, and the checks that refuse to combine files of different runs.

Every exit cache written by ``python -m extract`` carries a ``provenance``
record in its ``dyce`` metadata: one digest per ingredient of the run that
recorded it,

``backbone``
    the backbone's weights (every tensor of its state dict),
``exits``
    the exit bank's spec and weights,
``preprocess``
    the evaluation transform the images went through,
``training``
    the exit-training settings, the seed and the identity of the training data,
``data``
    the identity of the recorded split (file list and sizes, or contents),
``run``
    the run fingerprint, a digest of ``backbone``, ``exits``, ``preprocess``
    and ``training``: equal for every split of one run.

Search results copy the record of their search cache, cost profiles the
record of what they were measured on, and the run directory keeps the same
digests in ``run.json``. Two files may be combined (a test split evaluated
with a result, a validation split certifying a search, a cost profile priced
against a cache, a result deployed on a run) only when the fields of
:data:`MODEL_FIELDS` agree: they fix what a sample's confidences and
predictions are. Their MACs must agree as well. A file without a record
(written by hand, or by a release before records existed) can only be
combined with another such file.

Everything here is plain JSON and ``hashlib``: the digests of tensors are
computed in ``extract.fingerprint``, which feeds bytes to :func:`digest`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np

from .errors import DyceError

logger = logging.getLogger(__name__)

#: Metadata key of the record (caches, results, cost profiles).
KEY = "provenance"

#: Record fields in the order they are written, with what each one digests.
FIELDS = {
    "run": "run fingerprint",
    "backbone": "backbone weights",
    "exits": "exit weights and specs",
    "preprocess": "preprocessing",
    "training": "training settings, seed and training data",
    "data": "data split",
}

#: Fields two files must share to be combined: they fix every recorded
#: prediction and confidence of a given image.
MODEL_FIELDS = ("backbone", "exits", "preprocess")

#: Hex digits kept of a SHA-256 digest (128 bits).
DIGEST_LENGTH = 32

#: The command-line flag and keyword that skip these checks.
OVERRIDE_FLAG = "--allow-mixed-runs"
OVERRIDE_KEYWORD = "allow_mixed=True"
OVERRIDE_HINT = f"pass {OVERRIDE_FLAG} ({OVERRIDE_KEYWORD} in Python)"


class ProvenanceError(DyceError):
    """Files that come from different runs (or whose MACs differ) were about to be combined.

    The message names both files and the field that differs.
    """


def digest(*parts) -> str:
    """SHA-256 (first :data:`DIGEST_LENGTH` hex digits) of JSON data and byte strings.

    JSON parts are serialised canonically (sorted keys, no spaces), so two
    equal dicts give one digest whatever their key order.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            h.update(b"b")
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        else:
            text = json.dumps(part, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_plain)
            h.update(b"j")
            h.update(text.encode("utf-8"))
    return h.hexdigest()[:DIGEST_LENGTH]


def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} cannot be digested")


def run_fingerprint(record: dict) -> str:
    """The ``run`` field: a digest of the backbone, exits, preprocessing and training fields."""
    return digest({key: record.get(key) for key in ("backbone", "exits", "preprocess", "training")})


def make_record(*, backbone: str, exits: str, preprocess: str, training: str, data: str | None) -> dict:
    """A complete record, ``run`` computed from the other fields."""
    record = {"backbone": backbone, "exits": exits, "preprocess": preprocess, "training": training}
    return {"run": run_fingerprint(record), **record, "data": data}


def check_record(record, where: str, error: type[Exception] = DyceError) -> dict | None:
    """Return ``record`` as a plain dict after checking its shape, or None when absent.

    Raises
    ------
    DyceError (or ``error``)
        Naming ``where`` when the record is not an object of known fields with
        string (or null) values.
    """
    if record is None:
        return None
    if not isinstance(record, dict):
        raise error(f"{where}: {KEY!r} must be an object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise error(f"{where}: {KEY!r} has unknown fields {unknown} (known: {', '.join(FIELDS)})")
    for key, value in record.items():
        if value is not None and not isinstance(value, str):
            raise error(f"{where}: {KEY}.{key} must be a string or null, got {value!r}")
    return {key: record.get(key) for key in FIELDS}


@dataclass(frozen=True)
class Origin:
    """What a file says about where it came from, as far as combining it is concerned.

    Attributes
    ----------
    name : str
        How messages call the file (its path, or e.g. "the result's search cache").
    record : dict or None
        Its provenance record (None: the file has none).
    macs : dict or None
        ``backbone_macs`` (cumulative, per position), ``exit_macs`` ([P][K],
        null where absent) and ``total_macs``; None when the file has no MACs
        (a latency profile).
    split : str or None
        The data split, for messages.
    backbone : str or None
        The backbone's name as the file states it.
    """

    name: str
    record: dict | None
    macs: dict | None = None
    split: str | None = None
    backbone: str | None = None

    @classmethod
    def of_cache(cls, cache, name: str) -> "Origin":
        md = cache.metadata or {}
        return cls(name, check_record(md.get(KEY), name), cache_macs(cache), md.get("split"), md.get("backbone"))

    @classmethod
    def of_result(cls, metadata: dict, name: str = "the result's search cache") -> "Origin":
        """The search cache of a result, from the result's metadata (see ``search_metadata``)."""
        return cls(name, check_record(metadata.get(KEY), name), metadata.get("macs"), metadata.get("split"),
                   metadata.get("backbone"))

    def describe(self) -> str:
        run = (self.record or {}).get("run")
        bits = [f"split {self.split}" if self.split else None, f"run {run[:12]}" if run else "no provenance record"]
        return f"{self.name} ({', '.join(b for b in bits if b)})"


def cache_macs(cache) -> dict:
    """The MACs of a cache as JSON data (see :class:`Origin`)."""
    available = np.asarray(cache.available, bool)
    return {
        "backbone_macs": [int(v) for v in cache.backbone_macs],
        "exit_macs": [
            [int(cache.exit_macs[p, k]) if available[p, k] else None for k in range(available.shape[1])]
            for p in range(available.shape[0])
        ],
        "total_macs": int(cache.total_macs),
    }


def check_combinable(reference: Origin, other: Origin, *, allow_mixed: bool = False,
                     error: type[Exception] = ProvenanceError, require_record: bool = True,
                     override: str | None = OVERRIDE_HINT) -> None:
    """Raise unless ``other`` comes from the same backbone, exits and preprocessing as ``reference``.

    Parameters
    ----------
    reference, other : Origin
    allow_mixed : bool
        Log the difference as a warning instead of raising (for users who know
        the two runs are interchangeable).
    error : exception class
        Raised with the message (a subclass of the caller's error family).
    require_record : bool
        Whether a record on one side only is a difference. Cost profiles pass
        False: they are often measured by other tools and written by hand,
        and are then checked by backbone name (and by ``Costs.check``'s
        position and exit type names) only.
    override : str or None
        How the caller's user skips the check, quoted in the message (None:
        the caller offers no override).

    Raises
    ------
    ProvenanceError (or ``error``)
        Naming both files and the first field that differs: a provenance
        field, a record present on one side only, or the MACs.
    """
    problem = _difference(reference, other, require_record)
    if problem is None:
        return
    message = (
        f"{other.describe()} does not come from the run of {reference.describe()}: {problem}. "
        "Combining them would mix predictions of different models"
        + (f"; if you know they are interchangeable, {override}" if override else "; use files of one run")
    )
    if allow_mixed:
        logger.warning("%s", message.split(". Combining")[0] + " (allowed by the caller)")
        return
    raise error(message)


def check_caches(reference, other, reference_name: str, other_name: str, *, allow_mixed: bool = False,
                 error: type[Exception] = ProvenanceError, override: str | None = OVERRIDE_HINT) -> None:
    """Raise unless two caches can be combined: same structure, same run's model, same MACs.

    Structure (classes, positions, exit types) is
    :meth:`ExitCache.check_compatible` and cannot be overridden; the rest
    (backbone names, provenance record, MACs) is :func:`check_combinable`.
    """
    try:
        reference.check_compatible(other, backbone=False)
    except DyceError:
        try:  # the full comparison, so the message names the backbones as well
            reference.check_compatible(other)
        except DyceError as e:
            raise error(f"{other_name} does not match {reference_name}: {e}") from None
    check_combinable(Origin.of_cache(reference, reference_name), Origin.of_cache(other, other_name),
                     allow_mixed=allow_mixed, error=error, override=override)


def _difference(a: Origin, b: Origin, require_record: bool = True) -> str | None:
    if a.backbone is not None and b.backbone is not None and a.backbone != b.backbone:
        return f"backbones differ ({a.backbone!r} vs {b.backbone!r})"
    if (a.record is None) != (b.record is None) and require_record:
        has, lacks = (a, b) if a.record is not None else (b, a)
        return (f"{lacks.name} has no provenance record (written by hand or by an older release), "
                f"so nothing shows it was recorded with the model of {has.name}")
    if a.record is not None and b.record is not None:
        for key in MODEL_FIELDS:
            mine, theirs = a.record.get(key), b.record.get(key)
            if mine != theirs:
                return f"{FIELDS[key]} differ ({key} {_short(mine)} vs {_short(theirs)})"
    if a.macs is not None and b.macs is not None:
        for key in ("total_macs", "backbone_macs", "exit_macs"):
            if a.macs[key] != b.macs[key]:
                return f"MACs differ ({key}: {_first_difference(a.macs[key], b.macs[key])})"
    return None


def _short(value) -> str:
    return "none" if value is None else str(value)[:12]


def _first_difference(a, b) -> str:
    if not isinstance(a, list):
        return f"{a} vs {b}"
    flat_a, flat_b = np.array(a, dtype=object).ravel(), np.array(b, dtype=object).ravel()
    if flat_a.shape != flat_b.shape:
        return f"{len(a)} vs {len(b)} entries"
    i = next(i for i, (x, y) in enumerate(zip(flat_a, flat_b)) if x != y)
    index = np.unravel_index(i, np.array(a, dtype=object).shape)
    return f"entry {list(map(int, index))}: {flat_a[i]} vs {flat_b[i]}"
