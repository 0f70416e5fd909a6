"""Private numba kernels behind the public ``dyce_search`` functions.

Kernels take contiguous arrays with explicit dtypes and no Python objects;
their public wrappers validate dtype, shape and contiguity at the boundary.
Every kernel has a plain-loop reference in ``tests/naive.py`` (or
``tests/naive_search.py`` for the search kernels).

| kernel module | public wrapper |
|---|---|
| ``metrics.py`` | :func:`dyce_search.evaluation.evaluate`, :func:`dyce_search.evaluation.simulate` |
| ``state.py`` | a configuration's per-sample state and changing one position (used by the searches) |
| ``thresholds.py`` | :mod:`dyce_search.thresholds` (Eq. 13 for one position: exact, placement, bounded) |
| ``search.py`` | :func:`dyce_search.search.run` (Algorithms 2 and 3, baseline; drivers in ``methods.py``) |
| ``descent.py`` | :func:`dyce_search.search.run` with ``method="descent"``, :mod:`dyce_search.targets` |
"""
