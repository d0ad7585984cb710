"""The COMPUTE pipeline (source -> busy-loop op -> sink) on each system measured.

Every runner takes the same ``Workload`` and returns a ``Run``: wall seconds, process
CPU seconds and the end-to-end latency of every item (sink time minus the time the
source emitted it). Items are ints or RAG-like dicts of a few hundred bytes. Systems:
a plain for-loop (the limit; per item, or batched with the same per-batch work as the
runtimes), three threads joined by ``queue.Queue(64)``, Bytewax, and SAGE's
LocalRuntime chained (one fused replica) or with a thread per replica.
"""

from __future__ import annotations

import operator
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

_perf = time.perf_counter
#: a RAG-like item: question, retrieved chunk (~300 chars), ids, score, metadata
#: (~450 bytes as JSON); texts come from a corpus of 64 chunks, as retrieval repeats
CHUNKS = [
    (f"chunk {j}: " + "the retrieved passage says what the answer needs " * 8)[:300]
    for j in range(64)
]
QUESTIONS = [
    f"question {j}: what does the corpus say about topic {j}?" for j in range(64)
]
ITEMS = ("int", "dict")


@dataclass
class Workload:
    """Items to push through the pipeline: how many, op cost, batch, pacing, kind."""

    n: int
    cost_s: float
    batch: int
    rate: float | None = None  # items/s the source paces to (None: as fast as it can)
    item: str = "dict"  # "int" (the item is its index) or "dict" (RAG-like)


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    latencies: list[float] = field(default_factory=list)


def source(w: Workload) -> tuple[Iterator[Any], Callable[[Any], float]]:
    """The source's items (stamped when emitted) and ``stamp(item)``, the emission
    time of an item (a C-level getter for both kinds, so sinks cost the same)."""
    perf = _perf
    if w.item == "int":
        stamps = [0.0] * w.n

        def ints() -> Iterator[int]:
            for i in _paced(w):
                stamps[i] = perf()
                yield i

        return ints(), stamps.__getitem__

    def dicts() -> Iterator[dict[str, Any]]:
        for i in _paced(w):
            j = i & 63
            yield {
                "id": i,
                "t": perf(),
                "question": QUESTIONS[j],
                "doc_id": f"doc-{j}",
                "chunk": CHUNKS[j],
                "score": 0.5 + j / 128,
                "meta": {"source": "corpus.txt", "page": j},
            }

    return dicts(), operator.itemgetter("t")


def _paced(w: Workload) -> Iterator[int]:
    if w.rate is None:
        yield from range(w.n)
        return
    perf, start, gap = _perf, _perf(), 1.0 / w.rate
    for i in range(w.n):
        ahead = start + i * gap - perf()
        if ahead > 0.0002:
            time.sleep(ahead)
        yield i


def make_op(cost_s: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The ComputeOp: a busy loop of ``cost_s`` seconds returning the item."""
    if cost_s == 0:
        return lambda item: item

    def op(item: dict[str, Any]) -> dict[str, Any]:
        end = _perf() + cost_s
        while _perf() < end:
            pass
        return item

    return op


def _measure(body: Callable[[list[float]], None]) -> Run:
    lat: list[float] = []
    c0, t0 = time.process_time(), _perf()
    body(lat)
    return Run(_perf() - t0, time.process_time() - c0, lat)


def for_loop(w: Workload) -> Run:
    """The limit: one loop, no runtime. Per item (``w.batch == 1``): op and sink
    on each item as it comes. Batched: the same per-batch work as the runtimes'
    micro-batches (collect ``w.batch`` items, op on each, one clock read and one sink
    call per batch)."""
    op = make_op(w.cost_s)
    it, stamp = source(w)
    b = w.batch

    def body(lat: list[float]) -> None:
        perf = _perf
        if b == 1:
            add = lat.append
            for item in it:
                add(perf() - stamp(op(item)))
            return

        def sink_batch(batch: list[Any]) -> None:
            now = perf()
            lat.extend([now - stamp(x) for x in batch])

        while chunk := list(islice(it, b)):
            sink_batch([op(x) for x in chunk])

    return _measure(body)


def threads_queue(w: Workload) -> Run:
    """Three threads joined by queue.Queue(64); batches of ``w.batch`` items."""
    op = make_op(w.cost_s)
    it, stamp = source(w)
    done = object()

    def body(lat: list[float]) -> None:
        q1: queue.Queue[Any] = queue.Queue(64)
        q2: queue.Queue[Any] = queue.Queue(64)
        b = w.batch

        def produce() -> None:
            if b == 1:
                for item in it:
                    q1.put(item)
            else:
                while chunk := list(islice(it, b)):
                    q1.put(chunk)
            q1.put(done)

        def compute() -> None:
            while (x := q1.get()) is not done:
                q2.put(op(x) if b == 1 else [op(i) for i in x])
            q2.put(done)

        def sink() -> None:
            add, perf = lat.append, _perf
            while (x := q2.get()) is not done:
                if b == 1:
                    add(perf() - stamp(x))
                else:
                    now = perf()
                    lat.extend([now - stamp(i) for i in x])

        threads = [threading.Thread(target=f) for f in (produce, compute, sink)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return _measure(body)


def bytewax(w: Workload) -> Run:
    """Bytewax's run_main (one worker) with TestingSource(batch_size=w.batch)."""
    import bytewax.operators as bop
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource, run_main

    op = make_op(w.cost_s)
    it, stamp = source(w)

    def body(lat: list[float]) -> None:
        class Part(StatelessSinkPartition[Any]):
            def write_batch(self, batch: list[Any]) -> None:
                now = _perf()
                lat.extend([now - stamp(x) for x in batch])

        class Sink(DynamicSink[Any]):
            def build(self, step_id: str, worker_index: int, worker_count: int) -> Part:
                return Part()

        flow = Dataflow("compute")
        stream = bop.input("in", flow, TestingSource(it, batch_size=w.batch))
        bop.output("out", bop.map("op", stream, op), Sink())
        run_main(flow)

    return _measure(body)


def sage(w: Workload, *, chaining: bool) -> Run:
    """SAGE LocalRuntime; ``w.batch`` is the packet size (``buffer_size``)."""
    from sage_core import Contract, LocalEnvironment, SinkFunction

    op = make_op(w.cost_s)
    it, stamp = source(w)

    def body(lat: list[float]) -> None:
        class LatencySink(SinkFunction):
            contract = Contract(batch_size=1 << 16)

            def sink(self, item: Any) -> None:
                lat.append(_perf() - stamp(item))

            def sink_batch(self, batch: list[Any]) -> None:
                now = _perf()
                lat.extend([now - stamp(x) for x in batch])

        env = LocalEnvironment(
            "compute", chaining=chaining, buffer_size=w.batch, trace_every=0
        )
        env.from_source(lambda: it).map(op).sink(LatencySink)
        env.execute()

    return _measure(body)


def sage_chained(w: Workload) -> Run:
    return sage(w, chaining=True)


def sage_threads(w: Workload) -> Run:
    return sage(w, chaining=False)


SYSTEMS: dict[str, Callable[[Workload], Run]] = {
    "for-loop": for_loop,
    "threads+Queue(64)": threads_queue,
    "bytewax": bytewax,
    "sage (chained)": sage_chained,
    "sage (thread per replica)": sage_threads,
}
