"""Synthetic exit caches with the structure and MACs of real torchvision ResNets.

A synthetic cache stands in for a recorded one when no weights or ImageNet are
at hand (tests, benchmarks, demos). Its positions, channels and MACs are those
of the real model at 224x224 with the paper's five MLP exit types after every
residual block but the last; only the predictions are simulated. It is a
benchmark of *shape and speed*: searches see the real numbers of positions,
exit types and MACs, and realistic statistical structure, but its accuracies
are not ImageNet measurements and nothing in it is fitted to the paper's
results; do not read its Table II as a reproduction.

How predictions are simulated
-----------------------------
Each sample i has a latent "margin" at every exit, a sum of three independent
standard-normal parts::

    u[i, p, k] = -(B * z[i] + G * w[i, p] + D * eta[i, p, k])

``z`` is the sample's difficulty, shared by every exit and the head; ``w`` is a
stationary AR(1) process over depth (correlation exp(-distance / 0.25) in
fractions of the total MACs), so neighbouring positions agree more than distant
ones and the deepest exits share most of the head's ``w``; ``eta`` is the
exit's own noise. Exit (p, k) is correct on exactly the ``round(acc[p, k] * M)``
samples with the largest ``u`` (so standalone accuracies hit their targets
exactly). ``acc`` rises with the exit's capacity and, linearly in probit, with
depth t (0 at the first, 1 at the last early position)::

    probit(acc) = probit(first) + (probit(last) - probit(first)) * t

from a few percent at the first block to a few points below the head at the
last. The linear rise is the untuned choice; the real digits run shows it
(standalone accuracy rises roughly linearly in probit with the MACs after its
first stage). The head gets the model's torchvision top-1 accuracy.

What an exit's confidence knows
-------------------------------
An exit (and the head) sees its own margin ``u`` through Gaussian noise and
reports the calibrated probability of being right given what it saw, mapped
to [1/C, 1]. The noise shrinks linearly with depth (in fractions of the MACs)
from 3.5 at the first exit to 0.9 at the head, so confidence separates right
from wrong poorly early on and better later, as in real networks: the
correct-vs-wrong AUROC rises from about 0.65-0.70 at the first positions to
about 0.83 at the last and 0.86 at the head (real digits: 0.66-0.74 at its
first stage, 0.96-0.98 at its head; ImageNet ResNets' heads: 0.85-0.87).
Because a confident exit knows something of its own luck, a searched
ensemble can be slightly more accurate than the head (by about 1 % at
M = 20,000 on the ResNet-50 shape); deep exits and the head share most of
their hidden margin, so it cannot be much more.

``benchmarks/synthetic.py`` prints what the caches look like (accuracy and
AUROC by depth, Table II of the descent, search times). Wrong predictions
pick a per-sample "confuser" class more often at deeper exits (errors of deep
exits resemble the head's), else a uniformly random wrong class.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from ._resnet_arch import RESNET_BLOCKS, mlp_macs, resnet_blocks
from .cache import ExitCache

#: torchvision ``IMAGENET1K_V1`` top-1 accuracy (%) of each supported backbone
TOP1_ACCURACY = {
    "resnet18": 69.758,
    "resnet34": 73.314,
    "resnet50": 76.130,
    "resnet101": 77.374,
    "resnet152": 78.312,
}

SUPPORTED_BACKBONES = tuple(RESNET_BLOCKS)

#: the paper's five exit types: GAP, then an MLP of len(hidden) + 1 Linear layers
PAPER_EXIT_TYPES = (
    {"name": "mlp1", "hidden": []},
    {"name": "mlp3x500", "hidden": [500, 500]},
    {"name": "mlp3x1000", "hidden": [1000, 1000]},
    {"name": "mlp5x500", "hidden": [500, 500, 500, 500]},
    {"name": "mlp5x1000", "hidden": [1000, 1000, 1000, 1000]},
)

# Relative capacity of each exit type in [0, 1]; accuracy targets increase with it.
_CAPACITY = {"mlp1": 0.0, "mlp3x500": 0.5, "mlp5x500": 0.65, "mlp3x1000": 0.75, "mlp5x1000": 1.0}
# Standalone accuracy at the first position: 2% (mlp1) .. 8% (mlp5x1000), as for GAP + MLP on stage-1 features.
_FIRST_ACC, _FIRST_ACC_GAIN = 0.02, 0.06
# Gap below the head at the last early position: 7 points (mlp1) .. 3 points (mlp5x1000).
_LAST_GAP, _LAST_GAP_GAIN = 0.07, 0.04
# Latent variance split (sums to 1): sample difficulty B^2, depth process G^2, exit noise D^2.
_B, _G, _D = np.sqrt(0.70), np.sqrt(0.21), np.sqrt(0.09)
# Correlation length of the depth process, in fractions of the total MACs: neighbouring exits share
# their hidden mistakes, distant ones and the head less so.
_DEPTH_CORRELATION = 0.25
# Std of the noise through which an exit sees its own margin, at the first exit and at the head
# (linear in between, in fractions of the MACs): AUROC ~0.65-0.70 first, ~0.86 at the head.
_OBSERVATION_NOISE_FIRST, _OBSERVATION_NOISE_HEAD = 3.5, 0.9
# Probability that a wrong prediction is the sample's confuser class, at depth 0 and at the head.
_CONFUSER_FIRST, _CONFUSER_HEAD = 0.4, 0.8


def _target_accuracy(depth: np.ndarray, head_accuracy: float) -> np.ndarray:
    """float64 [P, K] standalone accuracy targets; ``depth`` in [0, 1] from first to last early position."""
    cap = np.array([_CAPACITY[e["name"]] for e in PAPER_EXIT_TYPES])
    first = ndtri(_FIRST_ACC + _FIRST_ACC_GAIN * cap)
    last = ndtri(head_accuracy - (_LAST_GAP - _LAST_GAP_GAIN * cap))
    return ndtr(first[None, :] + (last - first)[None, :] * depth[:, None])


def _top_n_threshold(u: np.ndarray, n: int) -> float:
    """The n-th largest of ``u``: exactly ``n`` values (if distinct) are at or above it."""
    m = u.shape[0]
    if n <= 0:
        return float(u.max()) + 1.0
    if n >= m:
        return float(u.min()) - 1.0
    return float(np.partition(u, m - n)[m - n])  # a value of u itself, so exact in float32


def _confidence(margin: np.ndarray, noise: np.ndarray, thr: np.ndarray, sigma: float, n_classes: int) -> np.ndarray:
    """Calibrated P(correct | what the exit sees), mapped to [1/C, 1].

    An exit is correct iff its margin ``u ~ N(0, 1)`` is >= ``thr``; it sees
    ``u + sigma * noise``. ``margin`` and ``noise`` [k, M], ``thr`` [k, 1];
    returns float32 [k, M].
    """
    s2 = sigma * sigma
    observed = margin + sigma * noise
    p = ndtr((observed / (1.0 + s2) - thr) / np.sqrt(s2 / (1.0 + s2)))
    return (1.0 / n_classes + (1.0 - 1.0 / n_classes) * p).astype(np.float32)


def _wrong_class(rng, label, confuser, p_confuser, n_classes, shape):
    """Wrong predictions: the confuser with probability ``p_confuser``, else a uniform wrong class."""
    other = (label + rng.integers(1, n_classes, size=shape, dtype=np.int32)) % n_classes
    return np.where(rng.random(shape, dtype=np.float32) < p_confuser, confuser, other).astype(np.int32)


def make_cache(backbone: str = "resnet152", n_samples: int = 50_000, n_classes: int = 1000, seed: int = 0) -> ExitCache:
    """A synthetic exit cache with the real structure and MACs of a torchvision ResNet.

    Positions are the outputs of every residual block but the last (ResNet-18:
    7, 34/50: 15, 101: 32, 152: 49), named like ``layer3.22``, with channels,
    reduction and cumulative MACs at 224x224; exit types are the paper's five
    MLPs (:data:`PAPER_EXIT_TYPES`) with analytic MACs. Standalone accuracy
    rises with depth and exit capacity, confidence separates right from
    wrong better with depth, and the head's accuracy is the torchvision V1
    top-1 (:data:`TOP1_ACCURACY`) to within 1/M. A shape and speed benchmark,
    not ImageNet; see the module docstring for the generative model.

    Parameters
    ----------
    backbone : str
        One of :data:`SUPPORTED_BACKBONES`.
    n_samples : int
        M, number of samples (labels are balanced over classes).
    n_classes : int
        Number of classes (>= 2); also sets the output width of the fc and exits.
    seed : int
        Seed of the generator, in [0, 2^31); equal arguments give identical
        caches. The backbone fixes the model, the seed draws the samples: two
        seeds are two disjoint sample sets of one model (sample ids
        ``seed * 2^32 + i``), e.g. a search and a test split.

    Returns
    -------
    ExitCache
        With ``metadata["synthetic"] = True``, dataset ``"imagenet-synthetic"``,
        weights ``"synthetic"``.
    """
    if backbone not in RESNET_BLOCKS:
        raise ValueError(f"unknown backbone {backbone!r}; supported: {', '.join(SUPPORTED_BACKBONES)}")
    if not isinstance(n_samples, (int, np.integer)) or isinstance(n_samples, bool) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, bool) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**31:
        raise ValueError(f"seed must be an integer in [0, 2**31), got {seed!r}")
    M, C = int(n_samples), int(n_classes)
    if M >= 2**32:
        raise ValueError(f"n_samples must be below 2**32, got {M}")

    blocks, total_macs = resnet_blocks(backbone, num_classes=C)
    early = blocks[:-1]
    P, K = len(early), len(PAPER_EXIT_TYPES)
    backbone_macs = np.array([b.cumulative_macs for b in early], dtype=np.int64)
    exit_macs = np.array(
        [[mlp_macs(b.channels, e["hidden"], C) for e in PAPER_EXIT_TYPES] for b in early], dtype=np.int64
    )
    depth_macs = np.append(backbone_macs, total_macs) / total_macs  # positions, then the head at 1
    depth = (depth_macs[:P] - depth_macs[0]) / max(depth_macs[P - 1] - depth_macs[0], 1e-12)
    head_accuracy = TOP1_ACCURACY[backbone] / 100.0
    accuracy = _target_accuracy(depth, head_accuracy)

    rng = np.random.default_rng(seed)
    label = rng.permutation(np.arange(M) % C).astype(np.int32)
    confuser = ((label + rng.integers(1, C, size=M)) % C).astype(np.int32)
    z = rng.standard_normal(M, dtype=np.float32)
    w = rng.standard_normal(M, dtype=np.float32)
    sight = (depth_macs - depth_macs[0]) / (1.0 - depth_macs[0])  # 0 at the first exit, 1 at the head

    pred = np.empty((P, K, M), dtype=np.int32)
    conf = np.empty((P, K, M), dtype=np.float32)
    u = np.empty((K, M), dtype=np.float32)
    for p in range(P + 1):
        if p:
            rho = np.float32(np.exp(-(depth_macs[p] - depth_macs[p - 1]) / _DEPTH_CORRELATION))
            w = rho * w + np.sqrt(1 - rho * rho) * rng.standard_normal(M, dtype=np.float32)
        shared = _B * z + _G * w
        kk = K if p < P else 1  # the head is one "exit"
        u[:kk] = -(shared + _D * rng.standard_normal((kk, M), dtype=np.float32))
        target = accuracy[p] if p < P else np.array([head_accuracy])
        thr = np.array([_top_n_threshold(u[k], int(round(target[k] * M))) for k in range(kk)], dtype=np.float32)
        correct = u[:kk] >= thr[:, None]
        sigma = _OBSERVATION_NOISE_FIRST + (_OBSERVATION_NOISE_HEAD - _OBSERVATION_NOISE_FIRST) * sight[p]
        c = _confidence(u[:kk], rng.standard_normal((kk, M), dtype=np.float32), thr[:, None], sigma, C)
        p_confuser = _CONFUSER_FIRST + (_CONFUSER_HEAD - _CONFUSER_FIRST) * depth_macs[p]
        wrong = _wrong_class(rng, label, confuser, p_confuser, C, (kk, M))
        if p < P:
            pred[p] = np.where(correct, label, wrong)
            conf[p] = c
        else:
            final_pred = np.where(correct[0], label, wrong[0])
            final_conf = c[0]

    return ExitCache(
        label=label,
        pred=pred,
        conf=conf,
        final_pred=final_pred,
        final_conf=final_conf,
        backbone_macs=backbone_macs,
        exit_macs=exit_macs,
        available=np.ones((P, K), dtype=bool),
        total_macs=total_macs,
        positions=tuple(b.name for b in early),
        exit_types=tuple(e["name"] for e in PAPER_EXIT_TYPES),
        sample=(np.int64(seed) << np.int64(32)) + np.arange(M, dtype=np.int64),
        num_classes=C,
        metadata={
            "backbone": backbone,
            "weights": "synthetic",
            "dataset": "imagenet-synthetic",
            "split": "val",
            "synthetic": True,
            "positions": [{"name": b.name, "channels": b.channels, "reduction": b.reduction} for b in early],
            "exit_types": [dict(e) for e in PAPER_EXIT_TYPES],
            "image_size": 224,
            "seed": int(seed),
            "provenance": synthetic_record(backbone, C, seed, M),
        },
    )


#: Bumped whenever the generative model changes, so caches of two generator
#: versions never count as one model.
GENERATOR_VERSION = 2


def synthetic_record(backbone: str, n_classes: int, seed: int, n_samples: int) -> dict:
    """The provenance record of a synthetic cache.

    The backbone, the number of classes and the generator version fix the
    model (its "weights" and "exits"); the seed and size fix the samples, so
    two seeds are two splits of one run.
    """
    from .provenance import digest, make_record

    model = {"generator": __name__, "version": GENERATOR_VERSION, "backbone": backbone, "n_classes": int(n_classes)}
    return make_record(
        backbone=digest(model, "backbone"),
        exits=digest(model, "exits"),
        preprocess=digest(model, "preprocess"),
        training=digest(model, "training"),
        data=digest({"seed": int(seed), "n_samples": int(n_samples)}),
    )
