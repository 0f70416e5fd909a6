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


def _sweep(cache, lambdas, method, threshold, options):
    from dyce_search import METHODS, run

    return METHODS[method].label, run(cache, lambdas, method=method, threshold=threshold, **options)


def _front(cache, lambdas, method, threshold, options):
    from dyce_search import METHODS, front

    return f"{METHODS[method].label} (front)", front(cache, lambdas=lambdas, **options)


def _one_type_baseline(cache, lambdas, method, threshold, options):
    from dyce_search import METHODS

    result, type_name = single_type_baseline(cache, lambdas, threshold=threshold, **options)
    return f"{METHODS[method].label}: same t, {type_name}", result


#: How Fig. 5 draws a method, by name in :data:`dyce_search.METHODS`; any other
#: method is drawn as its plain lambda sweep (:func:`_sweep`).
FIG5_CURVES = {"descent": _front, "baseline": _one_type_baseline}


def method_curves(cache, lambdas, threshold="exact", skip=(), given=None, **options):
    """One searched curve per method of :data:`dyce_search.METHODS` (paper Fig. 5), in table order.

    The descent is drawn as its dense front (:func:`dyce_search.front`), the
    baseline with the single best exit type (:func:`single_type_baseline`),
    every other method as its lambda sweep.

    Parameters
    ----------
    cache : ExitCache
    lambdas : array-like of float
    threshold : {"exact", "bounded"}
        Threshold minimiser of the methods that offer both (the descent is exact).
    skip : iterable of str
        Method names to leave out (e.g. ``("iterative",)``, slow on big caches).
    given : dict, optional
        method name -> (label, SearchResult) already computed (e.g. the front).
    **options
        Passed to every search (objective, costs, positions, progress, ...).

    Returns
    -------
    dict
        label -> SearchResult, in the table's order.
    """
    from dyce_search import METHODS

    given = dict(given or {})
    curves = {}
    for name, method in METHODS.items():
        if name in skip:
            continue
        if name in given:
            label, result = given[name]
        else:
            use = threshold if threshold in method.thresholds else "exact"
            label, result = FIG5_CURVES.get(name, _sweep)(cache, lambdas, name, use, options)
        curves[label] = result
    return curves
