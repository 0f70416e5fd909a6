"""The exit rule of Algorithm 1 (line 6), defined once for recording, simulation, search and run time.

Confidence
    The confidence of exit f_{n,k} on a sample is max(y~_{n,k}): the largest
    entry of the softmax of its logits, the softmax taken in float32
    (:data:`CONFIDENCE_DTYPE`). The exit cache stores exactly this float32
    value; at run time ``extract.runtime.top1`` computes it the same way (the
    one torch implementation, also used by the recorder).

Rule
    A sample that reaches enabled exit n leaves there iff its float32
    confidence c and the float64 threshold t_n satisfy ``c >= t_n``, compared
    exactly: c promoted to float64 (exact) against t_n (:func:`leaves`). A NaN
    confidence never leaves. Thresholds may be any finite float64: t_n > 1 lets
    nobody out, t_n <= 0 everyone who reaches n.

Two exactly equivalent encodings, and nothing else, implement the rule:

* float64 form: ``float64(c) >= t`` (:func:`leaves`; the scalar search kernels
  in ``dyce_search._kernels``);
* float32 form: ``c >= t32`` in float32 with ``t32 = float32_threshold(t)``, the
  smallest float32 >= t (:func:`float32_thresholds`; the vectorised metrics
  kernels and the run-time model, where a float32 comparison is twice as wide
  or native to the tensor). For every float32 c, NaN included,
  ``c >= t32`` holds exactly when ``float64(c) >= t``. Rounding t to the
  *nearest* float32 instead would flip the decision for the confidence just
  below a t that lies less than half a float32 step above it.

Torch-free: ``dyce_search`` never imports torch.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CONFIDENCE_DTYPE", "float32_threshold", "float32_thresholds", "leaves"]

#: dtype of a recorded confidence max(y~) (the softmax is taken in this dtype too).
CONFIDENCE_DTYPE = np.dtype(np.float32)


def leaves(conf, thresholds) -> np.ndarray:
    """Whether each confidence c lets its sample leave: ``float64(c) >= t`` (the rule itself).

    Parameters
    ----------
    conf : float32 array
        Recorded confidences max(y~) (NaN: no such exit, never leaves).
    thresholds : float or float64 array, broadcastable against ``conf``
        t_n.

    Returns
    -------
    bool array of the broadcast shape

    Raises
    ------
    TypeError
        If ``conf`` is not float32: the rule is defined on the recorded float32 value.
    """
    c = np.asarray(conf)
    if c.dtype != CONFIDENCE_DTYPE:
        raise TypeError(f"confidences must be {CONFIDENCE_DTYPE.name} (as recorded), got {c.dtype}")
    return c.astype(np.float64) >= np.asarray(thresholds, dtype=np.float64)


def float32_thresholds(thresholds) -> np.ndarray:
    """The smallest float32 >= each float64 threshold t (the float32 form of the rule).

    For every float32 confidence c (NaN included), ``c >= result`` in float32
    is exactly ``float64(c) >= t``. Thresholds beyond the float32 range
    become +-inf or the float32 extreme on the correct side.

    Parameters
    ----------
    thresholds : float64 [E]

    Returns
    -------
    float32 [E], contiguous
    """
    t = np.asarray(thresholds, dtype=np.float64)
    with np.errstate(over="ignore"):  # beyond the float32 range: +-inf, fixed up below
        t32 = t.astype(np.float32)
    low = t32.astype(np.float64) < t
    t32[low] = np.nextafter(t32[low], np.float32(np.inf))
    return np.ascontiguousarray(t32)


def float32_threshold(t: float) -> float:
    """:func:`float32_thresholds` of one threshold, as a Python float exactly representable in float32.

    Comparing a float32 tensor or array against the returned scalar involves
    no further rounding, so ``c >= float32_threshold(t)`` decides as
    ``float64(c) >= t``.

    Raises
    ------
    ValueError
        If ``t`` is NaN (an enabled exit needs a threshold).
    """
    t = float(t)
    if math.isnan(t):
        raise ValueError("threshold is NaN")
    return float(float32_thresholds(np.array([t]))[0])
