"""The source side of a replica: pulling micro-batches (or fused chunks) from the
source iterator and running them through the replica's chain."""

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


def produce(core: ReplicaCore) -> Outbound | None:
    """The next micro-batch of a source replica, run through its chain; None when
    the source is exhausted."""
    it = core._source_iter
    assert it is not None, "produce() before open()"
    if core._fused is not None and not core.trace_due(core._batches + 1):
        return _produce_fused(core, it, core._fused)
    size, linger = core.buffer_size, core.linger_s
    try:
        items = list(islice(it, 1))
        if items and size > 1 and linger:
            # pull in doubling chunks at C speed, checking the clock between
            # chunks: a partial packet waits about linger (at most ~2x) for a
            # steady source, and a fast source fills packets in few checks
            first, k = _perf(), 1
            while len(items) < size and _perf() - first < linger:
                k = min(2 * k, size - len(items))
                before = len(items)
                items.extend(islice(it, k))
                if len(items) - before < k:
                    break  # exhausted: the next produce() returns None
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
