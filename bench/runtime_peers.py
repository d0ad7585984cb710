"""The COMPUTE pipeline (source -> busy-loop op -> sink) on each system measured.

Every runner takes the same ``Workload`` and returns a ``Run``: wall seconds, process
CPU seconds and the end-to-end latency of every item (sink time minus the time the
source created it). Systems: a plain for-loop (the limit), three threads joined by
``queue.Queue(64)``, Bytewax, and SAGE's LocalRuntime.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

PAYLOAD = "x" * 760  # with the other fields, ~800 bytes as JSON
_perf = time.perf_counter


@dataclass
class Workload:
    """Items to push through the pipeline: how many, op cost, batch, pacing."""

    n: int
    cost_s: float
    batch: int
    rate: float | None = None  # items/s the source paces to (None: as fast as it can)


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    latencies: list[float] = field(default_factory=list)


def items(w: Workload) -> Iterator[dict[str, Any]]:
    """The source: ~800-byte dicts stamped with their creation time."""
    perf = _perf
    if w.rate is None:
        for i in range(w.n):
            yield {"id": i, "t": perf(), "payload": PAYLOAD}
        return
    start = perf()
    gap = 1.0 / w.rate
    for i in range(w.n):
        ahead = start + i * gap - perf()
        if ahead > 0.0002:
            time.sleep(ahead)
        yield {"id": i, "t": perf(), "payload": PAYLOAD}


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
    op = make_op(w.cost_s)

    def body(lat: list[float]) -> None:
        add, perf = lat.append, _perf
        for item in items(w):
            out = op(item)
            add(perf() - out["t"])

    return _measure(body)


def threads_queue(w: Workload) -> Run:
    """Three threads joined by queue.Queue(64); batches of ``w.batch`` items."""
    op = make_op(w.cost_s)
    done = object()

    def body(lat: list[float]) -> None:
        q1: queue.Queue[Any] = queue.Queue(64)
        q2: queue.Queue[Any] = queue.Queue(64)
        b = w.batch

        def source() -> None:
            if b == 1:
                for item in items(w):
                    q1.put(item)
            else:
                buf: list[Any] = []
                for item in items(w):
                    buf.append(item)
                    if len(buf) >= b:
                        q1.put(buf)
                        buf = []
                if buf:
                    q1.put(buf)
            q1.put(done)

        def compute() -> None:
            while (x := q1.get()) is not done:
                q2.put(op(x) if b == 1 else [op(i) for i in x])
            q2.put(done)

        def sink() -> None:
            add, perf = lat.append, _perf
            while (x := q2.get()) is not done:
                if b == 1:
                    add(perf() - x["t"])
                else:
                    now = perf()
                    for i in x:
                        add(now - i["t"])

        threads = [threading.Thread(target=f) for f in (source, compute, sink)]
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

    def body(lat: list[float]) -> None:
        class Part(StatelessSinkPartition[Any]):
            def write_batch(self, batch: list[Any]) -> None:
                now = _perf()
                for item in batch:
                    lat.append(now - item["t"])

        class Sink(DynamicSink[Any]):
            def build(self, step_id: str, worker_index: int, worker_count: int) -> Part:
                return Part()

        flow = Dataflow("compute")
        stream = bop.input("in", flow, TestingSource(items(w), batch_size=w.batch))
        bop.output("out", bop.map("op", stream, op), Sink())
        run_main(flow)

    return _measure(body)


def sage(w: Workload, *, chaining: bool) -> Run:
    """SAGE LocalRuntime; ``w.batch`` is the packet size (``buffer_size``)."""
    from sage_core import Contract, LocalEnvironment, SinkFunction

    op = make_op(w.cost_s)

    def body(lat: list[float]) -> None:
        class LatencySink(SinkFunction):
            contract = Contract(batch_size=1 << 16)

            def sink(self, item: Any) -> None:
                lat.append(_perf() - item["t"])

            def sink_batch(self, batch: list[Any]) -> None:
                now = _perf()
                for item in batch:
                    lat.append(now - item["t"])

        env = LocalEnvironment(
            "compute", chaining=chaining, buffer_size=w.batch, trace_every=0
        )
        env.from_source(lambda: items(w)).map(op).sink(LatencySink)
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
