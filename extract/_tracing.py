"""Run a module for its shapes or operation counts without computing anything.

PyTorch's fake tensors (``torch._subclasses.fake_tensor.FakeTensorMode``)
propagate shapes through the real modules, real weights included, while
skipping the arithmetic. That makes shape probes and MAC counts of a
ResNet-152 at 224x224 cost milliseconds instead of a real forward. A module
that fake tensors cannot run (data-dependent control flow) falls back to a
real forward under ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(*modules: nn.Module | None) -> Iterator[None]:
    """Put modules in eval mode for the block, then restore every submodule's flag.

    Eval mode matters twice here: batch norm must not update its running
    statistics from a probe, and dropout/drop-path must be the identity.
    """
    saved = []
    for module in modules:
        if module is None:
            continue
        saved.extend((m, m.training) for m in module.modules())
        module.eval()
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def run_shapes_only(fn: Callable[..., Any], make_inputs: Callable[[], tuple]) -> tuple[Any, bool]:
    """Call ``fn(*make_inputs())`` on fake tensors, or for real if that fails.

    Parameters
    ----------
    fn : callable
        Typically a module or a closure over modules.
    make_inputs : callable
        Returns the argument tuple; called inside the fake mode so that the
        tensors it creates are fake too.

    Returns
    -------
    result : Any
        What ``fn`` returned (fake tensors carry the right shapes and dtypes).
    faked : bool
        Whether no real computation took place.
    """
    try:
        with torch.no_grad(), fake_mode():
            return fn(*make_inputs()), True
    except Exception:  # noqa: BLE001 - any failure of fake propagation means: run it for real
        with torch.no_grad():
            return fn(*make_inputs()), False
