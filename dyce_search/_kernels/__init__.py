"""Private numba kernels behind the public ``dyce_search`` functions.

Kernels take contiguous arrays with explicit dtypes and no Python objects;
their public wrappers validate dtype, shape and contiguity at the boundary.
Every kernel has a plain-loop reference in ``tests/naive.py`` (or
``tests/naive_search.py`` for the search kernels).

Every comparison of a confidence with a threshold is the exit rule of
:mod:`dyce_search.exit_rule`, in one of its two exactly equivalent forms:
``metrics.py`` the float32 form (``conf >= t32``, thresholds prepared by
:func:`~dyce_search.exit_rule.float32_thresholds`), the other modules the
float64 form (``np.float64(conf) >= t`` against the float64 threshold, no
preparation). Each module's docstring says which.

| kernel module | public wrapper |
|---|---|
| ``metrics.py`` | :func:`dyce_search.evaluation.evaluate`, :func:`dyce_search.evaluation.simulate` |
| ``state.py`` | a configuration's per-sample state and changing one position (used by the searches) |
| ``thresholds.py`` | :mod:`dyce_search.thresholds` (Eq. 13 for one position: exact, placement, bounded) |
| ``search.py`` | :func:`dyce_search.search.run` (Algorithms 2 and 3, baseline; drivers in ``methods.py``) |
| ``descent.py`` | :func:`dyce_search.search.run` with ``method="descent"``, :mod:`dyce_search.targets` |
"""
