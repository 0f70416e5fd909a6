"""Parsing the numbers given on command lines: lambda grids and lists of targets.

Used by ``python -m dyce_search`` and ``python -m analysis`` alike, so both
accept exactly the same grids.
"""

from __future__ import annotations

import math

import numpy as np

#: The most values a START:STOP:STEP grid may expand to.
MAX_GRID = 1_000_000

#: The lambda grid of the command-line tools when --lambdas is not given (the paper's 101 values).
DEFAULT_LAMBDAS = "0:1:0.01"


def parse_lambdas(text: str) -> np.ndarray:
    """Lambdas from ``START:STOP:STEP`` (inclusive of STOP) or a comma list ``0.1,0.5``.

    Grid values are ``START + i * STEP`` rounded to 12 decimals, so
    ``0:1:0.01`` gives exactly 0.0, 0.01, ..., 1.0 (101 values).

    Raises
    ------
    ValueError
        For malformed text, a non-positive step, STOP < START, more than
        :data:`MAX_GRID` values, or a value that is NaN or outside [0, 1].
    """
    text = text.strip()
    if not text:
        raise ValueError("--lambdas is empty")
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, step = (float(p) for p in parts)
        else:
            values = [float(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"--lambdas: cannot parse {text!r}; use START:STOP:STEP (e.g. 0:1:0.01) or a list like 0.1,0.5") from None
    if ":" in text:
        if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(step)):
            raise ValueError(f"--lambdas: {text!r} has a non-finite number")
        if step <= 0:
            raise ValueError(f"--lambdas: step must be > 0, got {step:g}")
        if stop < start:
            raise ValueError(f"--lambdas: stop {stop:g} is below start {start:g}")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        if count > MAX_GRID:
            raise ValueError(f"--lambdas: {count} values is too many (at most {MAX_GRID:,})")
        values = [round(start + i * step, 12) for i in range(count)]
    out = np.array(values, dtype=np.float64)
    bad = ~((out >= 0) & (out <= 1))
    if bad.any():
        raise ValueError(f"--lambdas: every lambda must be in [0, 1], got {out[bad][0]:g}")
    return out


def parse_numbers(text: str, option: str) -> list[float]:
    """A comma list of finite numbers, e.g. ``0.05,0.02,0.005`` (ValueError naming ``option`` otherwise)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option}: cannot parse {text!r}; give numbers separated by commas") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{option}: give one or more finite numbers separated by commas, got {text!r}")
    return values


__all__ = ["parse_lambdas", "parse_numbers", "MAX_GRID", "DEFAULT_LAMBDAS"]
