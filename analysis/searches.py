"""Searches the figures need beyond a plain :func:`dyce_search.run` call."""

from __future__ import annotations

import numpy as np


def single_type_baseline(cache, lambdas, **options):
    """The paper's Fig. 5 baseline: one exit type everywhere, one shared threshold, the best type.

    ``run(method="baseline", baseline_type="best")`` picks the best type per
    lambda, so its curve can mix types. The paper's baseline commits to one
    type for the whole curve ("even when the best exit type is chosen"), so
    each available type is searched on its own and the one with the lowest
    objective summed over ``lambdas`` (Eq. 12, the quantity every search
    minimises) is kept; ties go to the smaller type index.

    Parameters
    ----------
    cache : ExitCache
    lambdas : array-like of float
    **options
        Passed to :func:`dyce_search.run` (threshold, objective, positions, ...).

    Returns
    -------
    result : SearchResult
        The chosen type's baseline search; ``metadata["search_seconds"]``
        covers the searches of every type, the time the choice took.
    exit_type : str
        Name of the chosen type.
    """
    from dyce_search import SearchResult, run

    best = None
    total = 0.0
    for k in np.flatnonzero(np.asarray(cache.available).any(axis=0)):
        result = run(cache, lambdas, method="baseline", baseline_type=int(k), **options)
        total += float(result.metadata.get("search_seconds", np.nansum(result.table["seconds"])))
        score = float(np.sum(result.table["f"].to_numpy(float)))
        if best is None or score < best[0]:
            best = (score, result, cache.exit_types[int(k)])
    if best is None:
        raise ValueError("the cache has no available exit for a baseline")
    _, result, name = best
    metadata = {**result.metadata, "search_seconds": total, "baseline_choice": "lowest sum of f over lambdas"}
    return SearchResult(result.table, result.configs, metadata), name
