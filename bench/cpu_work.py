"""CPU work for benchmark operators that must behave as real compute does.

``work(cost_s)`` makes an op doing a fixed amount of CPU work per item: the loop
iterations that take ``cost_s`` on an idle CPU, counted once in the process that
builds the op (the count travels with the op to the workers). Shared with another
thread or process, it takes longer, as real compute does. ``dask_peers.busy``
instead spins until ``cost_s`` of wall time has passed, however little CPU it got:
right for measuring a runtime's overhead around a known op, wrong for a pipeline
whose model must see the contention in its service times. ``cpu_time(cost_s)``
computes until its thread has had ``cost_s`` of CPU: contention shows as with
``work`` (a thread that waits for the GIL or the CPU does not advance its clock),
but the box's own speed does not (this shared VM ran the same loop iterations at
per-item CPU times 20-50% apart from one run to the next).
"""

from __future__ import annotations

import functools
import time
from typing import Any

_perf = time.perf_counter
_thread_cpu = time.thread_time
#: loop iterations between two reads of the thread's CPU clock (a system call)
_CHUNK = 64


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


def cpu_time(cost_s: float) -> Any:
    """An op computing ``cost_s`` of its thread's CPU time per item (module
    docstring): as ``work``, it takes longer in wall time when it shares a CPU or
    the GIL; unlike ``work``, not when the machine itself runs slower."""
    if cost_s == 0:
        return lambda item: item

    def op(item: Any) -> Any:
        end = _thread_cpu() + cost_s
        while _thread_cpu() < end:
            _spin(_CHUNK)
        return item

    return op


#: the per-item work of benchmark operators, by ``--work`` name
WORK = {"cpu-time": cpu_time, "loops": work}


def add_work_flag(parser: Any) -> None:
    """Add ``--work`` (a ``WORK`` name; ``cpu-time`` by default) to an argparse
    parser."""
    parser.add_argument(
        "--work",
        choices=sorted(WORK),
        default="cpu-time",
        help="CPU stages compute a fixed CPU time per item (cpu-time: the box's "
        "speed between runs does not change it) or fixed loop iterations (loops)",
    )
