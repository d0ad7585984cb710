"""COMPUTE pipeline (source -> op -> sink, ~800-byte dicts) on two worker processes:
SAGE's Dask runtime and the peers measured against it in the same run.

Every system gets two worker processes (the source and the sink share one, the op
has the other), the same batch size and the same source: ``n`` items, stamped with
their emission time, as fast as it can or paced to ``rate`` items/s. The peers are
pipelined as well as a hand-written pipeline can be: a batch is sent when it is full
or its first item has waited ``linger_s`` (SAGE's default linger), and up to
``WINDOW`` batches are in flight on each edge. Peers:

* Dask actors (async methods; calls awaited ``WINDOW`` at a time);
* Ray actors (async actors, ``WINDOW`` object refs in flight per edge), on a Ray
  runtime started for Ray's rows only (``ray_session``);
* Dask actors with one call per item (the naive baseline).

Each runner returns wall seconds, the CPU seconds of every process of the system
(this process and all its descendants: scheduler, client, nannies, workers, Ray's
daemons; ``ProcessTree``) and the emission-to-sink latency of every item
(``perf_counter`` is system-wide on Linux, so the sink's clock matches the source's).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil
from common import Span

PAYLOAD = "x" * 760
WINDOW = 4  # batches in flight per edge, for every peer
LINGER_S = 0.001  # SAGE's default linger_ms, for the peers' partial batches
_perf = time.perf_counter


@dataclass
class Run:
    """One run: ``wall_s`` from the start of the timed call, ``cpu_s`` of every
    process, and ``span_s`` from the first emission to the last arrival (throughput
    is ``n / span_s`` for every system: SAGE's wall includes deploying its job, the
    peers' excludes creating their actors)."""

    wall_s: float
    cpu_s: float
    latencies: list[float] = field(default_factory=list)
    span_s: float = 0.0


class ProcessTree:
    """CPU seconds used by this process and every descendant (alive at the end)."""

    def __init__(self) -> None:
        self.root = psutil.Process()
        self._start = self._times()

    def _times(self) -> dict[int, float]:
        out = {}
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.Error:
                continue  # exited meanwhile
        return out

    def used(self) -> float:
        end = self._times()
        return sum(v - self._start.get(pid, 0.0) for pid, v in end.items())


def busy(cost_s: float) -> Any:
    if cost_s == 0:
        return lambda item: item

    def op(item: Any) -> Any:
        end = _perf() + cost_s
        while _perf() < end:
            pass
        return item

    return op


def source_items(n: int, rate: float | None = None) -> Iterator[dict[str, Any]]:
    """The items, stamped when emitted; paced to ``rate`` items/s if given."""
    perf = _perf
    if rate is None:
        for i in range(n):
            yield {"id": i, "t": perf(), "payload": PAYLOAD}
        return
    start, gap = perf(), 1.0 / rate
    for i in range(n):
        ahead = start + i * gap - perf()
        if ahead > 0.0002:
            time.sleep(ahead)
        yield {"id": i, "t": perf(), "payload": PAYLOAD}


async def source_batches(
    n: int, batch: int, rate: float | None
) -> AsyncIterator[list[dict[str, Any]]]:
    """The peers' source: batches of the same items, full or ``LINGER_S`` old; pacing
    awaits (never blocks the event loop the sink shares)."""
    perf = _perf
    start = perf()
    gap = 1.0 / rate if rate else 0.0
    chunk: list[dict[str, Any]] = []
    first = 0.0
    for i in range(n):
        if gap:
            due = start + i * gap
            if chunk and due > first + LINGER_S:
                yield chunk  # would outwait the linger: send what is there
                chunk = []
            ahead = due - perf()
            if ahead > 0.0002:
                await asyncio.sleep(ahead)
        now = perf()
        if not chunk:
            first = now
        chunk.append({"id": i, "t": now, "payload": PAYLOAD})
        if len(chunk) >= batch or now - first >= LINGER_S:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Window:
    """At most ``WINDOW`` awaitables in flight; ``add`` waits for the oldest."""

    def __init__(self) -> None:
        self.pending: deque[Any] = deque()

    async def add(self, fut: Any) -> None:
        self.pending.append(fut)
        if len(self.pending) >= WINDOW:
            await self.pending.popleft()
        else:
            await asyncio.sleep(0)  # let the call go out now

    async def drain(self) -> None:
        while self.pending:
            await self.pending.popleft()


# -- SAGE ---------------------------------------------------------------------------


def sage_run(
    client: Any,
    n: int,
    cost_s: float,
    batch: int,
    rate: float | None = None,
    queue_capacity: int | None = WINDOW,
    **settings: Any,
) -> Run:
    """SAGE's pipeline; its edges hold ``queue_capacity`` packets (``WINDOW``, as
    many as the peers keep in flight; None: SAGE's default)."""
    from common import latency_sink

    from sage_core.api.dask_environment import DaskEnvironment

    sink = latency_sink(
        batch_size=1 << 16, span=True
    )  # whole packets, as the peers' sinks
    env = DaskEnvironment(
        "compute",
        client=client,
        policy="round-robin",
        chaining=False,
        buffer_size=batch,
        trace_every=0,
        **({"queue_capacity": queue_capacity} if queue_capacity else {}),
        **settings,
    )
    env.from_source(source_items, n=n, rate=rate).map(busy(cost_s), name="op").sink(
        sink
    )
    plan = env.compile()
    tree, t0 = ProcessTree(), _perf()
    result = env.submit_plan(plan).wait(timeout=900)
    wall = _perf() - t0
    lat, span_s = result.results["LatencySink"][0]
    return Run(wall, tree.used(), lat, span_s)


# -- Dask actors ------------------------------------------------------------------


class DaskSink:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.span = Span()

    async def put(self, item: Any) -> None:
        await self.put_many([item])

    async def put_many(self, items: list[Any]) -> None:
        now = _perf()
        self.lat.extend([now - x["t"] for x in items])
        self.span.add(items, now)

    async def result(self) -> tuple[list[float], float]:
        return self.lat, self.span.seconds()


class DaskOp:
    def __init__(self, sink: Any, cost_s: float) -> None:
        self.sink, self.op = sink, busy(cost_s)
        self.window = Window()

    async def put(self, item: Any) -> None:
        await self.window.add(self.sink.put(self.op(item)))

    async def put_many(self, items: list[Any]) -> None:
        op = self.op
        await self.window.add(self.sink.put_many([op(x) for x in items]))

    async def flush(self) -> None:
        await self.window.drain()


class DaskSource:
    def __init__(self, op: Any) -> None:
        self.op = op

    async def run(self, n: int, batch: int, rate: float | None) -> int:
        window = Window()
        async for chunk in source_batches(n, batch, rate):
            if batch == 1:
                await window.add(self.op.put(chunk[0]))
            else:
                await window.add(self.op.put_many(chunk))
        await window.drain()
        await self.op.flush()
        return n


def dask_actors_run(
    client: Any, n: int, cost_s: float, batch: int, rate: float | None = None
) -> Run:
    w0, w1 = sorted(client.scheduler_info(n_workers=-1)["workers"])[:2]
    sink = client.submit(DaskSink, actor=True, workers=[w0], pure=False).result()
    op = client.submit(
        DaskOp, sink, cost_s, actor=True, workers=[w1], pure=False
    ).result()
    src = client.submit(DaskSource, op, actor=True, workers=[w0], pure=False).result()
    tree, t0 = ProcessTree(), _perf()
    src.run(n, batch, rate).result()
    wall = _perf() - t0
    cpu = tree.used()
    lat, span_s = sink.result().result()
    return Run(wall, cpu, lat, span_s)


def local_cluster(n_workers: int = 2) -> tuple[Any, Any, list[int]]:
    """A LocalCluster of ``n_workers`` processes (one thread each), its client and
    the workers' pids."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        )
    client = Client(cluster)
    # a LocalCluster's workers may still be registering when its constructor returns
    client.wait_for_workers(n_workers, timeout=60)
    pids = list(client.run(os.getpid).values())
    return cluster, client, pids


@contextmanager
def dask_session(n_workers: int = 2) -> Iterator[Any]:
    """``local_cluster``'s client, the cluster closed after."""
    cluster, client, _ = local_cluster(n_workers)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


# -- Ray --------------------------------------------------------------------------


@contextmanager
def ray_session() -> Iterator[Any]:
    """Ray started for its own rows (2 CPUs) and shut down after; yields a runner
    ``run(n, cost_s, batch, rate) -> Run`` on two actor processes."""
    import ray

    for attempt in range(3):  # Ray gives its raylet 30 s, short on a loaded box
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as exc:
            ray.shutdown()
            if attempt == 2:
                raise
            print(f"Ray did not start ({exc}); retrying", flush=True)
    try:
        yield _ray_runner(ray)
    finally:
        ray.shutdown()


def _ray_runner(ray: Any) -> Any:
    @ray.remote(num_cpus=0)
    class RaySourceSink:
        """The source and the sink in one process, as in the Dask peers."""

        def __init__(self) -> None:
            self.lat: list[float] = []
            self.span = Span()

        async def put_many(self, items: list[Any]) -> None:
            now = _perf()
            self.lat.extend([now - x["t"] for x in items])
            self.span.add(items, now)

        async def run(self, op: Any, n: int, batch: int, rate: float | None) -> int:
            window = Window()
            async for chunk in source_batches(n, batch, rate):
                await window.add(op.put_many.remote(chunk))
            await window.drain()
            await op.flush.remote()
            return n

        def result(self) -> tuple[list[float], float]:
            return self.lat, self.span.seconds()

    @ray.remote(num_cpus=0)
    class RayOp:
        def __init__(self, sink: Any, cost_s: float) -> None:
            self.sink, self.op = sink, busy(cost_s)
            self.window = Window()

        async def put_many(self, items: list[Any]) -> None:
            op = self.op
            await self.window.add(self.sink.put_many.remote([op(x) for x in items]))

        async def flush(self) -> None:
            await self.window.drain()

    def run(n: int, cost_s: float, batch: int, rate: float | None = None) -> Run:
        ends = RaySourceSink.remote()
        op = RayOp.remote(ends, cost_s)
        ray.get([ends.result.remote(), op.flush.remote()])  # both processes up
        tree, t0 = ProcessTree(), _perf()
        ray.get(ends.run.remote(op, n, batch, rate))
        wall = _perf() - t0
        cpu = tree.used()
        lat, span_s = ray.get(ends.result.remote())
        for a in (ends, op):
            ray.kill(a)
        return Run(wall, cpu, lat, span_s)

    return run
