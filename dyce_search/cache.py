"""The exit cache: every exit's per-sample top-1 prediction and confidence.

One cache holds one backbone on one data split. See docs/cache-format.md for
the on-disk Parquet layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class ExitCache:
    """Recorded outputs of every exit of one backbone on one data split.

    Shapes use P = number of early exit positions (the head is position P),
    K = number of exit types, M = number of samples.

    Attributes
    ----------
    label : int32 [M]
        Ground-truth class, -1 where unknown.
    pred : int32 [P, K, M]
        Top-1 class of exit (p, k); -1 where the exit is absent.
    conf : float32 [P, K, M]
        Top-1 softmax probability of exit (p, k) (the paper's max(y~_{n,k}));
        NaN where the exit is absent.
    final_pred : int32 [M]
        Top-1 class of the original head (f_{N,1}).
    final_conf : float32 [M]
        Top-1 softmax probability of the original head.
    backbone_macs : int64 [P]
        Cumulative backbone MACs from the input to the output of each early position.
    exit_macs : int64 [P, K]
        MACs of exit (p, k); 0 where absent.
    available : bool [P, K]
        Whether exit type k exists at position p.
    total_macs : int
        MACs of the whole original model (all segments and its head).
    positions : tuple[str, ...]
        Names of the P early positions, in depth order.
    exit_types : tuple[str, ...]
        Names of the K exit types.
    sample : int64 [M]
        Sample identifiers (index into the dataset split).
    num_classes : int
    metadata : dict
        The full ``dyce`` metadata (backbone, weights, dataset, split, ...).
    """

    label: np.ndarray
    pred: np.ndarray
    conf: np.ndarray
    final_pred: np.ndarray
    final_conf: np.ndarray
    backbone_macs: np.ndarray
    exit_macs: np.ndarray
    available: np.ndarray
    total_macs: int
    positions: tuple
    exit_types: tuple
    sample: np.ndarray
    num_classes: int
    metadata: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.label.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.conf.shape[0])

    @property
    def n_types(self) -> int:
        return int(self.conf.shape[1])
