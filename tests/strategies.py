"""Hypothesis strategies for random exit caches, configurations and cost models.

Caches are built directly through the ``ExitCache(...)`` constructor (no
files), with random P, K and M (M = 1 included), absent exits, many exact
confidence ties (confidences drawn from a small grid), and labels either all
known or partly unknown.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from dyce_search.cache import ExitCache
from dyce_search.config import Config
from dyce_search.costs import Costs

#: Confidence grid used to force exact ties between samples and with thresholds.
TIE_GRID = np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32)


def random_cache(
    rng: np.random.Generator,
    P: int,
    K: int,
    M: int,
    C: int = 3,
    p_available: float = 1.0,
    first_exit: bool = True,
    tie_grid: bool = False,
    unknown_labels: bool = False,
) -> ExitCache:
    """A valid random :class:`ExitCache` (plain function; the strategies draw its arguments).

    Parameters
    ----------
    p_available : float
        Probability that exit (p, k) exists.
    first_exit : bool
        Force exit (0, 0) to exist.
    tie_grid : bool
        Draw confidences from ``TIE_GRID`` (exact ties everywhere); otherwise
        uniform, with 20 % set to exactly 0.5.
    unknown_labels : bool
        Make about half of the labels (at least one) -1.
    """
    available = rng.random((P, K)) < p_available
    if first_exit:
        available[0, 0] = True
    if tie_grid:
        conf = TIE_GRID[rng.integers(0, TIE_GRID.size, (P, K, M))]
    else:
        conf = rng.random((P, K, M), dtype=np.float32)
        conf[rng.random((P, K, M)) < 0.2] = np.float32(0.5)
    # predictions correlated with the label so that accuracies are not all tiny
    label = rng.integers(0, C, M).astype(np.int32)
    pred = np.where(rng.random((P, K, M)) < 0.6, label, rng.integers(0, C, (P, K, M))).astype(np.int32)
    final_pred = np.where(rng.random(M) < 0.8, label, rng.integers(0, C, M)).astype(np.int32)
    final_conf = rng.random(M, dtype=np.float32)
    if unknown_labels:
        unknown = rng.random(M) < 0.5
        unknown[rng.integers(0, M)] = True
        label = np.where(unknown, -1, label).astype(np.int32)
    pred[~available] = -1
    conf[~available] = np.nan
    cumulative = np.cumsum(rng.integers(1, 1000, P + 1))
    exit_macs = np.where(available, rng.integers(0, 300, (P, K)), 0).astype(np.int64)
    return ExitCache(
        label=label,
        pred=pred,
        conf=conf.astype(np.float32),
        final_pred=final_pred,
        final_conf=final_conf,
        backbone_macs=cumulative[:-1].astype(np.int64),
        exit_macs=exit_macs,
        available=available,
        total_macs=int(cumulative[-1]),
        positions=tuple(f"pos{p}" for p in range(P)),
        exit_types=tuple(f"type{k}" for k in range(K)),
        sample=np.arange(M, dtype=np.int64),
        num_classes=C,
        metadata={"backbone": "random", "synthetic": True, "split": "test"},
    )


def random_config(rng: np.random.Generator, cache: ExitCache, p_enable: float = 0.5, source: int | None = None) -> Config:
    """A random :class:`Config` valid for ``cache``.

    ``source`` picks thresholds: 0 = one of the cache's own confidences at that
    exit (exact ties), 1 = ``TIE_GRID``, 2 = uniform; None = any per position.
    """
    P = cache.n_positions
    exit_types = np.full(P, -1, np.int64)
    thresholds = np.full(P, np.nan)
    for p in range(P):
        choices = np.flatnonzero(cache.available[p])
        if choices.size == 0 or rng.random() >= p_enable:
            continue
        k = int(rng.choice(choices))
        exit_types[p] = k
        how = rng.integers(0, 3) if source is None else source
        if how == 0:
            thresholds[p] = float(cache.conf[p, k, rng.integers(0, cache.n_samples)])
        elif how == 1:
            thresholds[p] = float(TIE_GRID[rng.integers(0, TIE_GRID.size)])
        else:
            thresholds[p] = float(rng.random())
    return Config(exit_types, thresholds)


def random_cost_profile(rng: np.random.Generator, cache: ExitCache, unit: str = "ms", free_segment: bool = False) -> Costs:
    """A random :class:`Costs` for ``cache`` (segments > 0 but maybe one 0, exits >= 0, NaN where absent)."""
    P, K = cache.n_positions, cache.n_types
    segment = rng.random(P + 1) * 5 + 0.01
    if free_segment:
        segment[rng.integers(0, P + 1)] = 0.0
    exit_ = np.where(cache.available, rng.random((P, K)) * 2, np.nan)
    return Costs(segment, exit_, unit=unit, positions=cache.positions, exit_types=cache.exit_types, backbone="random")


@st.composite
def exit_caches(
    draw,
    max_positions: int = 5,
    max_types: int = 3,
    max_samples: int = 40,
    min_samples: int = 1,
    max_classes: int = 4,
    labels: str = "any",
):
    """A random, valid :class:`ExitCache` (see :func:`random_cache`).

    Parameters
    ----------
    labels : {"any", "known", "unknown"}
        ``"known"``: every label in [0, C); ``"unknown"``: at least one -1;
        ``"any"``: either.
    """
    mode = labels if labels != "any" else draw(st.sampled_from(["known", "known", "unknown"]))
    return random_cache(
        np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
        P=draw(st.integers(1, max_positions)),
        K=draw(st.integers(1, max_types)),
        M=draw(st.integers(min_samples, max_samples)),
        C=draw(st.integers(2, max_classes)),
        p_available=draw(st.sampled_from([1.0, 0.7, 0.4])),
        first_exit=draw(st.booleans()),
        tie_grid=draw(st.booleans()),
        unknown_labels=mode == "unknown",
    )


@st.composite
def configs(draw, cache: ExitCache, threshold_grid: bool | None = None):
    """A random :class:`Config` valid for ``cache`` (see :func:`random_config`).

    Thresholds come from the cache's own confidences (exact ties), the tie
    grid (``threshold_grid=True``), or a uniform draw; some positions are
    left disabled.
    """
    source = None if threshold_grid is None else (1 if threshold_grid else 2)
    return random_config(
        np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
        cache,
        p_enable=draw(st.sampled_from([0.0, 0.5, 1.0])),
        source=source,
    )


@st.composite
def random_costs(draw, cache: ExitCache, unit: str = "ms"):
    """A random :class:`Costs` for ``cache`` (see :func:`random_cost_profile`)."""
    return random_cost_profile(
        np.random.default_rng(draw(st.integers(0, 2**32 - 1))), cache, unit=unit, free_segment=draw(st.booleans())
    )


@st.composite
def caches_with_config(draw, **cache_kwargs):
    """(cache, config) pair."""
    cache = draw(exit_caches(**cache_kwargs))
    return cache, draw(configs(cache))
