"""Configurations that hold on unseen data: certified selection on a validation split, and splitting a cache.

Every search measures accuracy on the split it ran on, where it is biased
upwards (the thresholds are fitted to those samples). :func:`select` picks,
among configurations searched on one split, the cheapest whose accuracy drop
on *unseen* data is at most ``max_drop`` with probability at least
``1 - delta`` over the draw of a validation split, assuming the validation
samples and the deployment data are exchangeable. The procedure is
Learn-then-Test (Angelopoulos et al., 2021): the candidates are ordered from
most to least expensive *on the search split* (so the order does not depend
on the validation data), and the null hypothesis "this configuration's risk
exceeds max_drop" is tested for each in turn with an exact binomial p-value
by the fallback procedure (Wiens, 2003): the i-th hypothesis is tested at
``delta * w_i`` plus the level of the previous one if that was rejected,
with ``w`` spreading ``delta`` evenly over the first ``spread``
candidates. ``spread=1`` is plain fixed-sequence testing (stop at the first
hypothesis not rejected); a larger spread survives a first candidate that
the search split overfitted, at some power on each. Either way the
family-wise error is at most ``delta`` under any dependence between the
tests, so the cheapest certified configuration violates its bound with
probability at most ``delta``. If none is certified, the original model (no
early exit, no drop) is returned.

Risks (:data:`RISKS`):

``"accuracy"`` (needs labels)
    q = the share of the samples the head classifies correctly that the
    configuration gets wrong. The configuration is then right on at least
    (1 - q) of the head's correct samples, so its drop relative to the head
    (1 - A, Eq. 10) is at most q. Conditionally on which samples the head
    gets right, the count is binomial, so the test is exact.
``"agreement"`` (no labels needed)
    q = the share of samples whose prediction differs from the head's: the
    drop when accuracy is measured as agreement with the head, and an upper
    bound on the absolute drop of true-label accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config
from .errors import CacheError, ResultError
from .stats import binomial_pvalue, check_open_unit, upper_bound


def _accuracy_risk(cache, truth, config_pred):
    """(k, n): of the n samples the head gets right, k that the configuration gets wrong."""
    if (np.asarray(cache.label) < 0).any():
        raise CacheError("risk='accuracy' needs a label for every validation sample; use risk='agreement', "
                         "which needs none")
    head_right = np.asarray(cache.final_pred) == truth
    return int(np.count_nonzero(head_right & (config_pred != truth))), int(np.count_nonzero(head_right))


def _agreement_risk(cache, truth, config_pred):
    """(k, n): of all n samples, k whose prediction differs from the head's."""
    return int(np.count_nonzero(config_pred != np.asarray(cache.final_pred))), int(cache.n_samples)


#: risk name -> counts (k, n) of one configuration's per-sample predictions on the validation cache.
RISKS = {"accuracy": _accuracy_risk, "agreement": _agreement_risk}
#: Leading candidates over which ``delta`` is spread by default (see the module docstring).
SPREAD = 1


def split(cache, fractions=(0.5, 0.25, 0.25), seed=0, names=None) -> tuple:
    """Cut one recorded cache into disjoint parts (default search / validation / test), sample ids kept.

    For users who recorded a single split: search on the first part, certify
    with :func:`select` on the second, report on the third. Thin front of
    :meth:`ExitCache.split`, which documents the arguments; parts remember
    where they came from, so :func:`select` refuses a part the candidates were
    searched on.

    Returns
    -------
    tuple of ExitCache
    """
    from .cache import ExitCache

    if isinstance(cache, (str, Path)):
        cache = ExitCache.read(cache)
    return cache.split(fractions, seed=seed, names=names)


def _check_candidates(candidates, validation_cache, risk, delta, allow_mixed=False):
    from .result import SearchResult

    if not isinstance(candidates, SearchResult):
        raise TypeError(f"candidates must be a dyce_search.SearchResult, got {type(candidates).__name__}")
    if len(candidates) == 0:
        raise ResultError("no candidate configurations to select from")
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {tuple(RISKS)}, got {risk!r}")
    delta = check_open_unit(delta, "delta")
    candidates.check_cache(validation_cache, allow_mixed=allow_mixed)
    md = candidates.metadata
    searched = md.get("samples")
    if searched is None:
        raise ResultError("the candidates do not record the samples they were searched on (a result of an older "
                          "version); search again so that select can check the validation split is a different one")
    if searched == validation_cache.samples_digest:
        raise ResultError("the validation cache holds exactly the samples the candidates were searched on; "
                          "certify on a different split (dyce_search.split cuts one cache into parts)")
    theirs = validation_cache.metadata.get("split_from")
    mine = md.get("split_from")
    if theirs and mine and theirs.get("samples") == mine.get("samples") and theirs.get("seed") == mine.get(
            "seed") and theirs.get("fractions") == mine.get("fractions") and theirs.get("part") == mine.get("part"):
        raise ResultError(f"the validation cache is part {theirs.get('part')!r} of the split the candidates were "
                          "searched on; use another part")
    return delta


def _head_row(candidates):
    """Search-split metrics of the original model, the fallback when nothing is certified."""
    md = candidates.metadata
    n = int(md["n_samples"])
    return {"rel_cost": 1.0, "rel_accuracy": 1.0, "accuracy": float(md["head_accuracy"]),
            "cost": candidates.original_cost, "f": math.nan, "exits": [0] * len(md["positions"]) + [n]}


def fallback_levels(p_values, delta, spread):
    """Which hypotheses the fallback procedure rejects, in test order: bool [n].

    Hypothesis i is tested at ``delta / spread`` (i < spread, else 0) plus
    the level of hypothesis i - 1 if that one was rejected.
    """
    rejected = np.zeros(len(p_values), dtype=bool)
    carried = 0.0
    for i, p in enumerate(p_values):
        level = (delta / spread if i < spread else 0.0) + carried
        rejected[i] = level > 0.0 and p <= level
        carried = level if rejected[i] else 0.0
    return rejected


def select(candidates, validation_cache, max_drop, delta=0.1, risk="accuracy", spread=SPREAD, *,
           allow_mixed=False):
    """The cheapest configuration whose drop holds on unseen data with probability >= 1 - ``delta``.

    Parameters
    ----------
    candidates : SearchResult
        Configurations searched on another split (e.g. :func:`dyce_search.front`).
    validation_cache : ExitCache or path
        Samples the search never saw, exchangeable with the data the
        configuration will meet. Refused if it holds the search split's
        samples.
    max_drop : float or list of float in [0, 1)
        Allowed drop relative to the head (see the module docstring for what
        each risk bounds); one certified row per value. Each row holds with
        probability >= 1 - ``delta`` on its own (not simultaneously).
    delta : float in (0, 1)
        Allowed probability that the certified bound is violated.
    risk : {"accuracy", "agreement"}
        What is bounded (:data:`RISKS`); ``"agreement"`` needs no labels.
    spread : int >= 1
        Number of leading candidates ``delta`` is spread over (1: plain
        fixed-sequence testing); see the module docstring.
    allow_mixed : bool
        Accept a validation cache of another run than the search cache (other
        weights, exits, preprocessing or MACs), with a logged warning. A
        certificate is only as good as that assumption.

    Returns
    -------
    SearchResult
        One row per ``max_drop``: the configuration, its search-split metrics
        (``rel_cost`` ..., ``in-sample``), and ``target`` (max_drop),
        ``certified`` (the bound holds w.p. >= 1 - delta: a tested
        candidate or the fallback), ``fallback`` (True: nothing was certified
        and the row is the original model), ``risk_observed`` (q on the
        validation split), ``risk_bound`` (one-sided exact upper bound of q
        at 1 - delta, <= max_drop for a certified candidate), ``p_value``,
        ``tested`` (candidates tested before the procedure stopped),
        ``validation_rel_cost`` (C, Eq. 11), ``validation_rel_accuracy``,
        ``validation_accuracy`` and ``searched_by`` (the candidate's method).
        ``metadata`` adds ``method = "select"``, ``delta``, ``risk``,
        ``procedure`` and ``validation`` (samples digest, size, the n of
        the binomial tests as ``risk_samples``, split).

    Raises
    ------
    ResultError
        Validation samples equal to the search split's, or candidates that do
        not record their search samples, or that do not fit the cache, or a
        validation cache of another run (:meth:`SearchResult.check_cache`).
    CacheError
        ``risk="accuracy"`` with an unlabelled validation sample.
    ValueError
        ``max_drop`` outside [0, 1), ``delta`` outside (0, 1), unknown risk.
    """
    from .cache import ExitCache
    from .evaluation import simulate
    from .objective import reference
    from .problem import Problem
    from .result import SearchResult, _normalise_dtypes
    from .targets import _check_targets

    if isinstance(validation_cache, (str, Path)):
        validation_cache = ExitCache.read(validation_cache)
    targets = _check_targets(max_drop, "max_drop", 0.0, 1.0)
    delta = _check_candidates(candidates, validation_cache, risk, delta, allow_mixed)
    if isinstance(spread, bool) or not isinstance(spread, (int, np.integer)) or spread < 1:
        raise ValueError(f"spread must be a positive integer, got {spread!r}")
    md = candidates.metadata
    table = candidates.table.reset_index(drop=True)
    configs = candidates.configs

    # most to least expensive on the search split: an order the validation data cannot influence
    order = np.lexsort((np.arange(len(table)), -table["rel_accuracy"].to_numpy(float),
                        -table["rel_cost"].to_numpy(float)))
    truth = reference(validation_cache).truth
    risk_counts = RISKS[risk]
    counts = np.array([risk_counts(validation_cache, truth, simulate(validation_cache, configs[i]).pred)
                       for i in order], dtype=np.int64).reshape(len(order), 2)

    costs = candidates._stored_costs(validation_cache, allow_mixed)
    problem = Problem(validation_cache, costs)
    rows, chosen = [], []
    for m in targets:
        p_values = np.atleast_1d(binomial_pvalue(counts[:, 0], counts[:, 1], m))
        rejected = fallback_levels(p_values, delta, int(spread))
        tested = int(np.flatnonzero(rejected)[-1]) + 2 if rejected.any() else min(int(spread), len(order))
        if rejected.any():
            j = int(np.flatnonzero(rejected)[-1])  # the cheapest certified candidate
            i = int(order[j])
            config = configs[i]
            row = {c: table[c].iloc[i] for c in ("lambda", "rel_cost", "rel_accuracy", "accuracy", "cost", "f")}
            row["exits"] = table["exits"].iloc[i]
            k, n = (int(v) for v in counts[j])
            extra = {"fallback": False, "risk_observed": k / n if n else math.nan,
                     "risk_bound": upper_bound(k, n, delta), "p_value": float(p_values[j]),
                     "searched_by": str(table["method"].iloc[i])}
        else:
            config = Config.empty(len(md["positions"]))
            row = {"lambda": math.nan, **_head_row(candidates)}
            extra = {"fallback": True, "risk_observed": 0.0, "risk_bound": 0.0, "p_value": math.nan,
                     "searched_by": "original model"}
        ev = problem.evaluate(config)
        rows.append({**row, "method": "select", "objective": table["objective"].iloc[0], "threshold": "exact",
                     "seconds": math.nan, "target": float(m), "certified": True,
                     "tested": min(tested, len(order)), **extra,
                     "validation_rel_cost": ev.rel_cost, "validation_rel_accuracy": ev.rel_accuracy,
                     "validation_accuracy": ev.accuracy})
        chosen.append(config)
    result_md = {
        **md,
        "method": "select",
        "selected_from": md.get("method"),
        "delta": delta,
        "risk": risk,
        "spread": int(spread),
        "procedure": "Learn-then-Test: fallback procedure (fixed-sequence testing when spread = 1) from the most "
                     "to the least expensive candidate on the search split, exact binomial p-values",
        "validation": {"samples": validation_cache.samples_digest, "n_samples": int(validation_cache.n_samples),
                       "risk_samples": int(counts[0, 1]),
                       "split": validation_cache.metadata.get("split"),
                       "split_from": validation_cache.metadata.get("split_from")},
    }
    return SearchResult(_normalise_dtypes(pd.DataFrame(rows)), chosen, result_md)


__all__ = ["select", "split", "fallback_levels", "RISKS", "SPREAD"]
