"""CPU work for benchmark operators that must behave as real compute does.

``work(cost_s)`` makes an op doing a fixed amount of CPU work per item: the loop
iterations that take ``cost_s`` on an idle CPU, counted once in the process that
builds the op (the count travels with the op to the workers). Shared with another
thread or process, it takes longer, as real compute does. ``dask_peers.busy``
instead spins until ``cost_s`` of wall time has passed, however little CPU it got:
right for measuring a runtime's overhead around a known op, wrong for a pipeline
whose model must see the contention in its service times.
"""

from __future__ import annotations

import functools
import time
from typing import Any

_perf = time.perf_counter


def _spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i
    return x


@functools.cache
def loops_per_s() -> float:
    """Iterations of ``_spin``'s loop per second on this CPU, alone, measured once
    per process: the best of several 10 ms samples, so that a sample another process
    slowed does not count."""
    n, best = 300_000, 0.0
    for _ in range(5):
        t0 = _perf()
        _spin(n)
        best = max(best, n / max(_perf() - t0, 1e-9))
    return best


def work(cost_s: float) -> Any:
    """An op doing a fixed amount of CPU work per item: the loop iterations that take
    ``cost_s`` on an idle CPU (counted here, once). Unlike ``busy``, which spins until
    ``cost_s`` of wall time has passed however little CPU it got, it takes longer
    when it shares a CPU, as real compute does; so its service times show the
    contention a model of the pipeline must account for."""
    if cost_s == 0:
        return lambda item: item
    n = max(1, round(cost_s * loops_per_s()))

    def op(item: Any) -> Any:
        _spin(n)
        return item

    return op
