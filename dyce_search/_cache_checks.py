"""Coercion and validation behind ``ExitCache.__post_init__``.

Every check is vectorised over whole arrays (one min/max reduction per array)
and only the error path looks for the offending element, so validating a
50,000-sample ResNet-152 cache costs a few tens of milliseconds.
"""

from __future__ import annotations

import json
from numbers import Integral

import numpy as np

from . import _cache_schema as schema
from .errors import CacheError


def as_int_array(name: str, x, dtype) -> np.ndarray:
    """Contiguous integer array of ``dtype``; refuses floats and values that would wrap."""
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise CacheError(f"{name} must hold integers, got dtype {a.dtype}")
    if not np.can_cast(a.dtype, dtype, "safe") and a.size:
        info = np.iinfo(dtype)
        lo, hi = a.min(), a.max()
        if lo < info.min or hi > info.max:
            raise CacheError(f"{name} has value {lo if lo < info.min else hi} that does not fit {np.dtype(dtype)}")
    return _owned(np.ascontiguousarray(a, dtype=dtype))


def _owned(a: np.ndarray) -> np.ndarray:
    """``a``, copied when read-only (a zero-copy Arrow column, a read-only memory map).

    numba compiles a kernel once per argument type, and a read-only array is
    another type: without the copy a cache read from Parquet would compile
    every kernel again, after the warm-up (``dyce_search._kernels.warmup``)
    and inside a search's timed region.
    """
    return a if a.flags.writeable else a.copy()


def as_float_array(name: str, x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise CacheError(f"{name} must hold floating-point numbers, got dtype {a.dtype}")
    return _owned(np.ascontiguousarray(a, dtype=np.float32))


def as_bool_array(name: str, x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 1):
            raise CacheError(f"{name} must be boolean (or 0/1), got values outside {{0, 1}}")
    elif a.dtype.kind != "b":
        raise CacheError(f"{name} must be boolean, got dtype {a.dtype}")
    return _owned(np.ascontiguousarray(a, dtype=np.bool_))


def as_int(name: str, v) -> int:
    if not isinstance(v, Integral) or isinstance(v, (bool, np.bool_)):
        raise CacheError(f"{name} must be an integer, got {v!r}")
    return int(v)


def as_names(name: str, names, n: int, what: str) -> tuple:
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise CacheError(f"{name} must be a sequence of {n} strings, got {names!r}")
    names = tuple(str(v) if isinstance(v, str) else v for v in names)  # np.str_ -> str
    if len(names) != n:
        raise CacheError(f"{name} has {len(names)} names but the arrays have {n} {what}")
    seen = set()
    for v in names:
        if not isinstance(v, str) or not v:
            raise CacheError(f"{name} must hold non-empty strings, got {v!r}")
        if v in seen:
            raise CacheError(f"{name} has the duplicate name {v!r}")
        seen.add(v)
    return names


def check_shape(name: str, a: np.ndarray, shape: tuple, meaning: str) -> None:
    if a.shape != shape:
        raise CacheError(f"{name} has shape {a.shape}, expected {shape} ({meaning})")


def _first_bad(ok: np.ndarray) -> int:
    return int(np.flatnonzero(~ok)[0])


def check_unit_interval(column: str, conf: np.ndarray, sample: np.ndarray) -> None:
    """Confidences must be finite and in [0, 1]; NaN fails both comparisons."""
    with np.errstate(invalid="ignore"):
        lo, hi = conf.min(), conf.max()
    if lo >= 0 and hi <= 1:
        return
    i = _first_bad((conf >= 0) & (conf <= 1))
    raise CacheError(f"column {column!r}: confidence {conf[i]} at row {i} (sample {sample[i]}) is not in [0, 1]")


def check_classes(column: str, values: np.ndarray, lo: int, num_classes: int, sample: np.ndarray, what: str) -> None:
    vmin, vmax = values.min(), values.max()
    if vmin >= lo and vmax < num_classes:
        return
    i = _first_bad((values >= lo) & (values < num_classes))
    raise CacheError(
        f"column {column!r}: {what} {values[i]} at row {i} (sample {sample[i]}) is outside [{lo}, {num_classes}) "
        f"for num_classes={num_classes}"
    )


def check_exits(pred, conf, available, num_classes, exit_types, sample) -> None:
    """Value checks on the available exits, one reduction per array over all of them at once."""
    with np.errstate(invalid="ignore"):
        cmin, cmax = conf.min(axis=2), conf.max(axis=2)
        conf_ok = (cmin >= 0) & (cmax <= 1)
    pmin, pmax = pred.min(axis=2), pred.max(axis=2)
    pred_ok = (pmin >= 0) & (pmax < num_classes)
    for ok, arr, field in ((conf_ok, conf, "conf"), (pred_ok, pred, "pred")):
        bad = available & ~ok
        if bad.any():
            p, k = (int(v[0]) for v in np.nonzero(bad))
            column = schema.exit_column(p, exit_types[k], field)
            if field == "conf":
                check_unit_interval(column, arr[p, k], sample)
            else:
                check_classes(column, arr[p, k], 0, num_classes, sample, "prediction")


def normalise_absent(pred, conf, exit_macs, available):
    """Absent exits hold pred -1, conf NaN, MACs 0; copy an input array only when it must change."""
    absent = np.argwhere(~available)
    if not len(absent):
        return pred, conf, exit_macs
    fix_pred = [(p, k) for p, k in absent if (pred[p, k] != -1).any()]
    fix_conf = [(p, k) for p, k in absent if not np.isnan(conf[p, k]).all()]
    if fix_pred:
        pred = pred.copy()
        for p, k in fix_pred:
            pred[p, k] = -1
    if fix_conf:
        conf = conf.copy()
        for p, k in fix_conf:
            conf[p, k] = np.nan
    if exit_macs[~available].any():
        exit_macs = np.where(available, exit_macs, 0)
    return pred, conf, exit_macs


def check_macs(backbone_macs, exit_macs, available, total_macs, positions, exit_types) -> None:
    if total_macs <= 0:
        raise CacheError(f"total_macs must be positive, got {total_macs}")
    if len(backbone_macs) and backbone_macs[0] <= 0:
        raise CacheError(f"backbone_macs of position 0 ({positions[0]!r}) must be positive, got {backbone_macs[0]}")
    steps = np.diff(backbone_macs)
    if (steps <= 0).any():
        p = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise CacheError(
            f"backbone_macs must be strictly increasing (cumulative MACs from the input): position {p} "
            f"({positions[p]!r}) has {backbone_macs[p]} <= {backbone_macs[p - 1]} "
            f"at position {p - 1} ({positions[p - 1]!r})"
        )
    if len(backbone_macs) and backbone_macs[-1] >= total_macs:
        raise CacheError(
            f"backbone_macs of the last early position ({positions[-1]!r}) is {backbone_macs[-1]}, "
            f"which must be below total_macs={total_macs}"
        )
    neg = available & (exit_macs < 0)
    if neg.any():
        p, k = (int(v[0]) for v in np.nonzero(neg))
        raise CacheError(
            f"exit_macs of exit type {exit_types[k]!r} at position {p} ({positions[p]!r}) "
            f"is negative: {exit_macs[p, k]}"
        )


def _merge_entries(key: str, given, names: tuple, derived: list) -> list:
    """Per-position / per-type metadata entries: the caller's extra fields plus the derived ones."""
    if given is None:
        return derived
    if not isinstance(given, (list, tuple)) or len(given) != len(names):
        raise CacheError(f"metadata {key!r} must be a list of {len(names)} entries, got {given!r}")
    out = []
    for entry, name, d in zip(given, names, derived):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise CacheError(f"metadata {key!r} entries must be objects or names, got {entry!r}")
        if entry.get("name", name) != name:
            raise CacheError(
                f"metadata {key!r} entry {entry.get('name')!r} does not match the name {name!r} in the same place"
            )
        out.append({**d, **{k: v for k, v in entry.items() if k not in d}})
    return out


def canonical_metadata(
    md, *, positions, exit_types, backbone_macs, exit_macs, available, total_macs, num_classes
) -> dict:
    """The full ``dyce`` metadata: standard keys first (derived ones from the arrays), then user keys.

    The result is plain JSON data, so it survives a write/read round trip unchanged.
    """
    if md is None:
        md = {}
    if not isinstance(md, dict):
        raise CacheError(f"metadata must be a dict, got {type(md).__name__}")
    for key in ("backbone", "weights", "dataset", "split"):
        v = md.get(key)
        if v is not None and not isinstance(v, str):
            raise CacheError(f"metadata {key!r} must be a string or None, got {v!r}")
    synthetic = md.get("synthetic", False)
    if not isinstance(synthetic, (bool, np.bool_)):
        raise CacheError(f"metadata 'synthetic' must be a bool, got {synthetic!r}")
    derived_pos = [{"name": n, "backbone_macs": int(m)} for n, m in zip(positions, backbone_macs)]
    derived_types = [{"name": n} for n in exit_types]
    out = {
        "format": schema.FORMAT,
        "version": schema.VERSION,
        "backbone": md.get("backbone"),
        "weights": md.get("weights"),
        "dataset": md.get("dataset"),
        "split": md.get("split"),
        "num_classes": num_classes,
        "synthetic": bool(synthetic),
        "positions": _merge_entries("positions", md.get("positions"), positions, derived_pos),
        "exit_types": _merge_entries("exit_types", md.get("exit_types"), exit_types, derived_types),
        "exit_macs": [
            [int(exit_macs[p, k]) if available[p, k] else None for k in range(len(exit_types))]
            for p in range(len(positions))
        ],
        "total_macs": total_macs,
    }
    if md.get("provenance") is not None:
        from .provenance import check_record

        out["provenance"] = check_record(md["provenance"], "metadata", CacheError)
    for key, v in md.items():
        if key not in out:
            out[key] = v
    return json.loads(schema.to_json(out))
