"""The source side of a replica: pulling micro-batches (or fused chunks) from the
source iterator and running them through the replica's chain.

Packets fill adaptively (``fill``): how long a partial packet may wait for more items
depends on the downstream's pressure when the packet starts (idle, busy, backlog;
``linger_for``), bounded by ``linger_ms`` and the plan's ``latency_target_ms``. At
moderate load packets go out small and soon; as a backlog builds they grow towards
``buffer_size``, which is what keeps throughput at peak load.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from sage_core.observe.traces import new_trace
from sage_core.runtime.fused import FusedChain
from sage_core.runtime.operators import OperatorFailure

if TYPE_CHECKING:
    from sage_core.runtime.worker import Outbound, ReplicaCore

_perf = time.perf_counter

#: weight of a packet in ``ReplicaCore.source_pace`` (a moving average)
PACE_WEIGHT = 0.1

#: downstream pressure levels (``ReplicaCore.pressure``)
IDLE, BUSY, BACKLOG = 0, 1, 2


def linger_for(core: ReplicaCore, pressure: int) -> float:
    """Seconds a source packet may wait to fill, given its downstream's pressure:
    half the linger while the downstream is idle (items go out soon), the linger
    while items are on the way, and half the latency target while packets wait for
    credit (the packet would wait behind them anyway, so it may as well grow).

    Items on the way is the common case at half load, where each extra millisecond
    is on every item's latency (twice the linger put the p99 of 1024-item packets
    over the latency target in ``bench/dask_bench.py``); at peak the downstream is
    backlogged instead."""
    if pressure >= BACKLOG:
        return max(2 * core.linger_s, core.latency_target_s / 2)
    if pressure == BUSY:
        return core.linger_s
    return core.linger_s / 2


def fill(core: ReplicaCore, it: Iterator[Any]) -> list[Any]:
    """The next packet's items: up to ``buffer_size``, pulled until the first one has
    waited ``linger_for(core, pressure)``.

    Items are pulled in chunks at C speed (``islice``), doubling while the source
    keeps up; a chunk is never larger than the time left fits at the source's
    measured pace, so a slow or paced source does not overshoot the linger. A pull
    blocks until the source yields, so the pace of this packet alone is not
    enough: a paced source that fell behind (its thread was descheduled) yields its
    late items at once and then one per period again, and chunks doubling on the
    late items' speed would wait periods for the rest. ``core.source_pace``, the
    source's mean seconds per item over past packets, caps a chunk at the items
    the time left fits at that pace (at least one), so such a packet overshoots
    its linger by one period at most.
    """
    size = core.buffer_size
    t0 = _perf()
    items = list(islice(it, 1))
    if not items or size == 1 or not core.linger_s:
        return items
    first = _perf()
    deadline = first + linger_for(core, core.pressure())
    per_item = first - t0  # the source's pace so far
    pace = core.source_pace
    k = 1
    while len(items) < size:
        now = _perf()
        left = deadline - now
        if left <= 0:
            break
        k = min(2 * k, size - len(items))
        if per_item > 0:
            k = min(k, int(left / per_item))
            if k < 1:
                break  # the next item would most likely come after the deadline
        if pace > 0:
            k = max(1, min(k, int(left / pace)))
        before = len(items)
        items.extend(islice(it, k))
        got = len(items) - before
        if got < k:
            break  # exhausted: the next produce() returns None
        per_item = (_perf() - now) / got
    took = (_perf() - t0) / len(items)
    core.source_pace = pace + PACE_WEIGHT * (took - pace) if pace else took
    return items


def produce(core: ReplicaCore) -> Outbound | None:
    """The next micro-batch of a source replica, run through its chain; None when
    the source is exhausted."""
    it = core._source_iter
    assert it is not None, "produce() before open()"
    if core._fused is not None and not core.trace_due(core._batches + 1):
        return _produce_fused(core, it, core._fused)
    pulled = _perf()
    try:
        items = fill(core, it)
    except Exception as exc:
        raise OperatorFailure(
            operator=core.ops[0].name,
            replica=core.replica,
            sequence=core._produced,
            item=None,
            key=None,
            cause=exc,
        ) from exc
    if not items:
        return None
    n = len(items)
    core._produced += n
    src = core.metrics.operators[core.ops[0].name]
    src.items_out += n
    core._batches += 1
    now = _perf()
    core.metrics.source_s += now - pulled
    traced = None
    if core.trace_due(core._batches):
        trace = new_trace(f"{core.replica}/{core._batches}", core.job_id, core.replica)
        traced = [(trace, now)]
    if not core.executors:
        m = core.metrics
        m.items_out += n
        m.batches += 1
        tr = [t for t, _ in traced] if traced else None
        return core._emit(items, tr, now)
    return core._run(items, 0, traced, now)


def _produce_fused(
    core: ReplicaCore, it: Iterator[Any], fused: FusedChain
) -> Outbound | None:
    t0 = _perf()
    try:
        n, _ = fused.run(it)
    except OperatorFailure:
        raise
    except Exception as exc:
        raise OperatorFailure(
            operator=core.ops[0].name,
            replica=core.replica,
            sequence=core._produced,
            item=None,
            key=None,
            cause=exc,
        ) from exc
    if n == 0:
        return None
    elapsed = _perf() - t0
    core._produced += n
    core._batches += 1
    m = core.metrics
    m.operators[core.ops[0].name].items_out += n
    m.items_in += n
    m.batches += 1
    m.service_s += elapsed
    seen, last = fused.seen, core._fused_seen
    for i, ex in enumerate(core.executors):
        st = ex.stats
        st.items_in += seen[i] - last[i]
        if i + 1 < len(seen):
            st.items_out += seen[i + 1] - last[i + 1]
    core.executors[0].stats.service_s += elapsed
    core._fused_seen = list(seen)
    return []
