"""Fused execution of a whole pipeline chained into one source replica.

When a source task has no downstream channel and every operator after the source is a
per-item function with ``on_error`` handled per item, each item is pushed through the
chain the moment it is pulled (a nest of closures: ``sink(map(x))``), with no packet
and no batch: latency is the item's own processing time. Bookkeeping (cancel checks,
metrics) happens once per chunk. Items in/out are counted per operator; service time
is measured for the chain as a whole and reported on its first operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from sage_core.functions import (
    FilterFunction,
    FlatMapFunction,
    MapFunction,
    SinkFunction,
)
from sage_core.runtime.operators import Executor, overrides

_perf = time.perf_counter
#: longest a chunk runs before the driver gets control back (cancel, metrics)
CHUNK_S = 0.02
CHUNK_ITEMS = 4096
#: items between two reads of the clock (a power of two)
CLOCK_EVERY = 16
CLOCK_MASK = CLOCK_EVERY - 1


class StageError(Exception):
    """An operator of a fused chain raised on ``item``."""

    def __init__(self, stage: int, item: Any, cause: BaseException) -> None:
        super().__init__(stage, item, cause)
        self.stage, self.item, self.cause = stage, item, cause


def fusable(executors: list[Executor]) -> bool:
    """Whether the chain after a source can run fused (per-item, ends in a sink)."""
    if not executors or not isinstance(executors[-1].fn, SinkFunction):
        return False
    kinds = (MapFunction, FilterFunction, FlatMapFunction)
    *body, sink = executors
    # a sink with its own per-item sink() may take items one by one (collect does)
    sink_ok = not sink.batched or overrides(sink.fn, SinkFunction, "sink")
    return sink_ok and all(isinstance(ex.fn, kinds) and not ex.batched for ex in body)


def _stage(
    i: int, ex: Executor, nxt: Callable[[Any], None] | None, seen: list[int]
) -> Callable[[Any], None]:
    fn = ex.fn
    if isinstance(fn, SinkFunction):
        s = fn.sink

        def sink(x: Any) -> None:
            seen[i] += 1
            try:
                s(x)
            except Exception as exc:
                raise StageError(i, x, exc) from exc

        return sink
    assert nxt is not None
    if isinstance(fn, MapFunction):
        m = fn.map

        def map_(x: Any) -> None:
            seen[i] += 1
            try:
                y = m(x)
            except Exception as exc:
                raise StageError(i, x, exc) from exc
            nxt(y)

        return map_
    if isinstance(fn, FilterFunction):
        f = fn.filter

        def filter_(x: Any) -> None:
            seen[i] += 1
            try:
                keep = f(x)
            except Exception as exc:
                raise StageError(i, x, exc) from exc
            if keep:
                nxt(x)

        return filter_
    assert isinstance(fn, FlatMapFunction)
    fm = fn.flat_map

    def flat_(x: Any) -> None:
        seen[i] += 1
        try:
            ys = list(fm(x))
        except Exception as exc:
            raise StageError(i, x, exc) from exc
        for y in ys:
            nxt(y)

    return flat_


class FusedChain:
    """Runs chunks of source items through a fused chain (see module doc)."""

    def __init__(self, executors: list[Executor]) -> None:
        self.executors = executors
        #: items that entered each stage so far
        self.seen = [0] * len(executors)
        push: Callable[[Any], None] | None = None
        for i in range(len(executors) - 1, -1, -1):
            push = _stage(i, executors[i], push, self.seen)
        assert push is not None
        self.push = push

    def run(self, it: Iterator[Any]) -> tuple[int, bool]:
        """Pull and process items for about CHUNK_S; (items pulled, exhausted)."""
        push, perf = self.push, _perf
        deadline = perf() + CHUNK_S
        n = 0
        for x in it:
            n += 1
            try:
                push(x)
            except StageError as err:
                self._failed(err)
            # the clock is read every CLOCK_EVERY items: a clock read costs about
            # as much as a no-op stage
            if not n & CLOCK_MASK and (n >= CHUNK_ITEMS or perf() > deadline):
                return n, False
        return n, True

    def _failed(self, err: StageError) -> None:
        ex = self.executors[err.stage]
        ex.seq = self.seen[err.stage] - 1
        ex.failed([err.item], err.item, err.cause)  # raises unless dead-letter
