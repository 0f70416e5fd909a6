"""Compile the kernels a search uses before the search starts its clock.

numba compiles a kernel on its first call: tens of seconds on a cold cache,
and still a fraction of a second to load it from numba's on-disk cache
(``cache=True``) in a new process. A search that paid this inside its timed
region would report a one-off cost as search time (``seconds``,
``search_seconds``). :func:`compile_kernels` instead runs the same search
once on a tiny synthetic cache, once per process and search path, and the
searches call it just before they start timing. While numba actually
compiles (not when it loads from its cache) the ``dyce_search`` logger says
so once, as the wait is long and otherwise silent.
"""

from __future__ import annotations

import logging
import time

from numba.core import event

log = logging.getLogger(__name__)

MESSAGE = "compiling search kernels (once; cached afterwards)..."

#: Search paths warmed up in this process (see :func:`compile_kernels`).
_warm: set = set()
_announced = False


class _Announcer(event.Listener):
    """Logs :data:`MESSAGE` at the first kernel numba compiles (its ``numba:compile`` event skips cache hits)."""

    def on_start(self, ev):
        global _announced
        if not _announced:
            _announced = True
            log.info(MESSAGE)

    def on_end(self, ev):
        pass


def compile_kernels(path: tuple) -> None:
    """Compile (or load from numba's cache) the kernels of one search path; a no-op once done in this process.

    ``path`` is ``("run", method, threshold, conservative)`` for
    :func:`dyce_search.run` (``conservative`` a bool) or ``("targets",)``
    for :func:`~dyce_search.cheapest`, :func:`~dyce_search.most_accurate` and
    :func:`~dyce_search.front`, which share their kernels.
    """
    if path in _warm:
        return
    _warm.add(path)  # first: the warm-up's own search comes back here
    started = time.perf_counter()
    try:
        with event.install_listener("numba:compile", _Announcer()):
            _exercise(path)
    except BaseException:
        _warm.discard(path)
        raise
    log.debug("search kernels of %s ready in %.2f s", " ".join(map(str, path)), time.perf_counter() - started)


def _exercise(path: tuple) -> None:
    """One search of ``path`` on a tiny cache: every kernel signature it uses gets compiled."""
    from ..search import run
    from ..synthetic import make_cache
    from ..targets import cheapest, front, most_accurate
    from . import metrics

    cache = make_cache("resnet18", n_samples=64, n_classes=4)
    lambdas = [0.3, 0.7]
    if path[0] == "targets":
        cheapest(cache, [0.05], lambdas=lambdas, progress=False)
        most_accurate(cache, [0.5], lambdas=lambdas, progress=False)
        front(cache, lambdas=lambdas, drops=[0.05], progress=False)
    else:
        _, method, threshold, conservative = path
        run(cache, lambdas, method=method, threshold=threshold, conservative=0.9 if conservative else None,
            progress=False)
    # A result's metrics come from the evaluation kernels; a tiny cache takes their serial
    # variants, so the parallel ones, which take the same arguments, are compiled here too.
    for serial, parallel in ((metrics.exit_counts_serial, metrics.exit_counts),
                             (metrics.exit_trace_serial, metrics.exit_trace)):
        for signature in serial.signatures:
            parallel.compile(signature)
