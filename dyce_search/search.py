"""Configuration search (paper Sec. V-B): one exit configuration G = {k, t} per lambda.

:func:`run` prepares the problem once (:class:`~dyce_search.problem.Problem`),
runs one method of the table :data:`dyce_search.methods.METHODS` (default
``"descent"``; the paper's ``"single_pass"``, ``"iterative"`` and
``"baseline"`` exactly as the paper defines them) and evaluates every
configuration through :meth:`SearchResult.from_configs`, so search and
evaluation never disagree.

Thresholds are minimised ``"exact"``-ly (default; global minimum over the
candidate confidences, see :mod:`dyce_search.thresholds`) or ``"bounded"``
(the paper's ``scipy.optimize.minimize_scalar``). Objective values inside the
searches are computed from exact integer counts, so results are identical
across runs and thread counts. See docs/search.md for the algorithms, what
each guarantees, and timings.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ._kernels.warmup import compile_kernels
from .config import Config
from .methods import DEFAULT_METHOD, METHODS, get_method
from .problem import Problem
from .thresholds import METHODS as THRESHOLD_METHODS

OBJECTIVES = ("paper", "normalized")


def check_lambdas(lambdas) -> np.ndarray:
    """float64 [L] from array-like ``lambdas``; ValueError if empty, NaN or outside [0, 1]."""
    try:
        lam = np.asarray(lambdas, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"lambdas must be numbers in [0, 1], got {lambdas!r}") from None
    lam = np.atleast_1d(lam)
    if lam.ndim != 1:
        raise ValueError(f"lambdas must be one-dimensional, got shape {lam.shape}")
    if lam.size == 0:
        raise ValueError("lambdas is empty; give at least one value in [0, 1]")
    bad = ~((lam >= 0.0) & (lam <= 1.0))  # NaN fails both
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"lambda must be in [0, 1], got {lam[i]!r} at index {i}")
    return np.ascontiguousarray(lam)


def allowed_exits(cache, positions=None, exit_types=None) -> np.ndarray:
    """bool [P, K]: exits a search may enable (available, at an allowed position, of an allowed type).

    Parameters
    ----------
    positions, exit_types : iterable of int or str, optional
        Allowed early positions / exit types by index or name; None allows all.
    """
    allowed = np.asarray(cache.available, bool).copy()
    if positions is not None:
        keep = np.zeros(cache.n_positions, bool)
        for p in _as_list(positions, "positions"):
            keep[cache.position_index(p)] = True
        allowed &= keep[:, None]
    if exit_types is not None:
        keep = np.zeros(cache.n_types, bool)
        for k in _as_list(exit_types, "exit_types"):
            keep[cache.exit_type_index(k)] = True
        allowed &= keep[None, :]
    return allowed


def _as_list(values, what):
    if isinstance(values, (str, int, np.integer)):
        return [values]
    try:
        return list(values)
    except TypeError:
        raise ValueError(f"{what} must be a list of indices or names, got {values!r}") from None


def _progress(progress, total, desc):
    """tqdm bar over lambdas: on a TTY by default, never with progress=False."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="lambda", leave=False)


# ------------------------------------------------------------------ public


def run(
    cache,
    lambdas,
    method=DEFAULT_METHOD,
    threshold="exact",
    objective="paper",
    costs=None,
    max_rounds=None,
    baseline_type="best",
    positions=None,
    exit_types=None,
    progress=None,
    conservative=None,
):
    """Search one exit configuration per lambda (paper Sec. V-B).

    Parameters
    ----------
    cache : ExitCache or path
        The search cache (a path is read with ``ExitCache.read``).
    lambdas : array-like of float in [0, 1]
        lambda of Eq. 12 (weight of the error against the cost).
    method : str
        A name in :data:`dyce_search.methods.METHODS`: ``"descent"`` (default:
        exact coordinate descent, never worse than the others' results it
        starts from, a coordinate-wise optimum of f), ``"single_pass"``
        (Algorithm 3), ``"iterative"`` (Algorithm 2) or ``"baseline"`` (one exit
        type at every position with one shared threshold, paper Fig. 5).
    threshold : {"exact", "bounded"}
        How each threshold t_c is minimised (Eq. 13), see
        :mod:`dyce_search.thresholds`; ``"descent"`` is exact only.
    objective : {"paper", "normalized"}
        Scale of f (see :class:`dyce_search.objective.Objective`).
    costs : None, Costs or path
        S_n and Delta_{n,k} before normalisation: the cache's MACs (None), a
        :class:`~dyce_search.costs.Costs`, or a Costs JSON file.
    max_rounds : int, optional
        Iterative search only: stop after this many applied changes (default: until no change helps).
    baseline_type : "best", int or str
        Baseline only: the exit type (index or name), or "best", the type
        whose best shared threshold gives the lowest f for each lambda.
    positions : iterable of int or str, optional
        Early positions where exits may be enabled (others stay disabled).
    exit_types : iterable of int or str, optional
        Exit types that may be used.
    progress : bool, optional
        tqdm bar over lambdas; default: when stderr is a terminal.
    conservative : float in (0, 1), optional
        The authors' released code's conservative objective: every exit
        group's accuracy at the ``conservative`` quantile of its Beta
        posterior (:mod:`dyce_search.conservative`). Only with
        ``method="single_pass"`` or ``"iterative"`` and ``threshold="bounded"``
        (the searches it was made for); a heuristic, not a guarantee
        (:func:`dyce_search.select` certifies one). ``f`` in the table is then
        the conservative objective and ``conservative_rel_accuracy`` its A.

    Returns
    -------
    SearchResult
        ``table`` has one row per lambda with ``lambda, method, objective,
        threshold, rel_cost`` (C, Eq. 11), ``rel_accuracy`` (A, Eq. 10),
        ``accuracy, cost, unit, f`` (Eq. 12), ``n_exits, exits`` (E_n), ``exit_types,
        thresholds``, ``seconds`` (wall time per lambda: a parallel batch's
        time divided by its size) and the method's own columns
        (``descent``: ``start``, the start whose polish won, and ``sweeps``;
        ``iterative``: ``rounds`` and ``scans``).

    Raises
    ------
    ValueError
        Empty lambdas, NaN or a value outside [0, 1]; an unknown method,
        threshold, objective, position or exit type; a threshold minimiser
        the method does not support; ``max_rounds`` < 1; an objective that
        is undefined on this cache.
    CacheError, CostError
        If the cache or the costs are malformed or do not fit each other.
    """
    from .cache import ExitCache
    from .result import SearchResult

    lambdas = check_lambdas(lambdas)
    entry = get_method(method)
    if threshold not in THRESHOLD_METHODS:
        raise ValueError(f"threshold must be one of {THRESHOLD_METHODS}, got {threshold!r}")
    if threshold not in entry.thresholds:
        raise ValueError(f"method {method!r} supports threshold {' or '.join(map(repr, entry.thresholds))}, "
                         f"got {threshold!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if max_rounds is not None and (not isinstance(max_rounds, (int, np.integer)) or max_rounds < 1):
        raise ValueError(f"max_rounds must be a positive integer or None, got {max_rounds!r}")
    if conservative is not None:
        from .conservative import check_alpha

        conservative = check_alpha(conservative)
        if not entry.conservative or threshold != "bounded":
            offered = [m.name for m in METHODS.values() if m.conservative]
            raise ValueError(f"the conservative objective needs method in {offered} with threshold='bounded' (the "
                             f"released code's searches); got method={method!r}, threshold={threshold!r}")
    if isinstance(cache, (str, Path)):
        cache = ExitCache.read(cache)
    problem = Problem(cache, costs, objective)
    problem.check_searchable()
    allowed = allowed_exits(cache, positions, exit_types)
    coefs = problem.coefficient_table(lambdas)
    options = {"max_rounds": max_rounds, "baseline_type": baseline_type, "conservative": conservative}
    if method == "baseline":
        from .methods import baseline_types

        baseline_types(cache, allowed, baseline_type)  # an unknown type fails before any work

    compile_kernels(("run", method, threshold, conservative is not None))  # a one-off, not search time
    started = time.perf_counter()
    bar = _progress(progress, len(lambdas), f"{method} search")
    try:
        found = entry.search(problem, allowed, lambdas, coefs, threshold, options, bar)
    finally:
        if bar is not None:
            bar.close()
    total_seconds = time.perf_counter() - started

    configs = [Config(k, t) for k, t in zip(found.exit_types, found.thresholds)]
    metadata = {
        "max_rounds": max_rounds if method == "iterative" else None,
        "baseline_type": baseline_type if method == "baseline" else None,
        "allowed_positions": [int(p) for p in np.flatnonzero(allowed.any(axis=1))],
        "allowed_exit_types": [int(k) for k in np.flatnonzero(allowed.any(axis=0))],
        "search_seconds": total_seconds,
        "conservative": conservative,
    }
    return SearchResult.from_configs(problem, configs, lambdas, method=method, threshold=threshold,
                                     seconds=found.seconds, extra=found.columns, metadata=metadata,
                                     conservative=conservative)


__all__ = ["run", "METHODS", "OBJECTIVES", "check_lambdas", "allowed_exits"]
