"""COMPUTE pipeline (source -> op -> sink, ~800-byte dicts) across two worker
processes: SAGE's Dask runtime and the peers it is measured against in the same run —
naive Dask actors (one call per item / per 256-item list) and Ray actors (256-item
batches). Each runner returns wall seconds, worker-process CPU seconds and the
latency of every item (perf_counter is system-wide on Linux, so the sink's clock
matches the source's)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

PAYLOAD = "x" * 760
_perf = time.perf_counter


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    latencies: list[float] = field(default_factory=list)


def busy(cost_s: float) -> Any:
    if cost_s == 0:
        return lambda item: item

    def op(item: Any) -> Any:
        end = _perf() + cost_s
        while _perf() < end:
            pass
        return item

    return op


def source_items(n: int) -> Any:
    perf = _perf
    for i in range(n):
        yield {"id": i, "t": perf(), "payload": PAYLOAD}


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


# -- SAGE ---------------------------------------------------------------------------


def sage_run(client: Any, pids: list[int], n: int, cost_s: float, batch: int) -> Run:
    from sage_core import SinkFunction
    from sage_core.api.dask_environment import DaskEnvironment

    class LatencySink(SinkFunction):
        def __init__(self) -> None:
            super().__init__()
            self.lat: list[float] = []

        def sink_batch(self, items: list[Any]) -> None:
            now = _perf()
            self.lat.extend([now - x["t"] for x in items])

        def result(self) -> list[float]:
            return self.lat

    env = DaskEnvironment(
        "compute",
        client=client,
        policy="round-robin",
        chaining=False,
        buffer_size=batch,
        queue_capacity=32,
        trace_every=0,
    )
    env.from_source(source_items, n=n).map(busy(cost_s), name="op").sink(LatencySink)
    plan = env.compile()
    c0, t0 = cpu_of(pids), _perf()
    result = env.submit_plan(plan).wait(timeout=900)
    wall = _perf() - t0
    return Run(wall, cpu_of(pids) - c0, result.results["LatencySink"][0])


# -- naive Dask actors ----------------------------------------------------------------


class NaiveSink:
    def __init__(self) -> None:
        self.lat: list[float] = []

    async def put(self, item: Any) -> None:
        self.lat.append(_perf() - item["t"])

    async def put_many(self, items: list[Any]) -> None:
        now = _perf()
        self.lat.extend([now - x["t"] for x in items])

    async def result(self) -> list[float]:
        return self.lat


class NaiveOp:
    def __init__(self, sink: Any, cost_s: float) -> None:
        self.sink, self.op = sink, busy(cost_s)

    async def put(self, item: Any) -> None:
        await self.sink.put(self.op(item))

    async def put_many(self, items: list[Any]) -> None:
        await self.sink.put_many([self.op(x) for x in items])


class NaiveSource:
    def __init__(self, op: Any) -> None:
        self.op = op

    async def run(self, n: int, batch: int) -> int:
        items = source_items(n)
        if batch == 1:
            for item in items:
                await self.op.put(item)
            return n
        chunk: list[Any] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == batch:
                await self.op.put_many(chunk)
                chunk = []
        if chunk:
            await self.op.put_many(chunk)
        return n


def naive_run(client: Any, pids: list[int], n: int, cost_s: float, batch: int) -> Run:
    w0, w1 = sorted(client.scheduler_info(n_workers=-1)["workers"])[:2]
    sink = client.submit(NaiveSink, actor=True, workers=[w0], pure=False).result()
    op = client.submit(
        NaiveOp, sink, cost_s, actor=True, workers=[w1], pure=False
    ).result()
    src = client.submit(NaiveSource, op, actor=True, workers=[w0], pure=False).result()
    c0, t0 = cpu_of(pids), _perf()
    src.run(n, batch).result()
    wall = _perf() - t0
    cpu = cpu_of(pids) - c0
    return Run(wall, cpu, sink.result().result())


# -- Ray --------------------------------------------------------------------------------


def ray_runner() -> Any:
    """A runner over Ray actors (256-item batches), or raises with the reason."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote
    class RSink:
        def __init__(self) -> None:
            self.lat: list[float] = []

        def put_many(self, items: list[Any]) -> None:
            now = _perf()
            self.lat.extend([now - x["t"] for x in items])

        def result(self) -> list[float]:
            return self.lat

        def pid(self) -> int:
            return os.getpid()

    @ray.remote
    class ROp:
        def __init__(self, sink: Any, cost_s: float) -> None:
            self.sink, self.op = sink, busy(cost_s)

        def put_many(self, items: list[Any]) -> None:
            ray.get(self.sink.put_many.remote([self.op(x) for x in items]))

        def pid(self) -> int:
            return os.getpid()

    @ray.remote
    class RSource:
        def __init__(self, op: Any) -> None:
            self.op = op

        def run(self, n: int, batch: int) -> int:
            chunk: list[Any] = []
            for item in source_items(n):
                chunk.append(item)
                if len(chunk) == batch:
                    ray.get(self.op.put_many.remote(chunk))
                    chunk = []
            if chunk:
                ray.get(self.op.put_many.remote(chunk))
            return n

        def pid(self) -> int:
            return os.getpid()

    def run(n: int, cost_s: float, batch: int) -> Run:
        sink = RSink.remote()
        op = ROp.remote(sink, cost_s)
        src = RSource.remote(op)
        pids = ray.get([a.pid.remote() for a in (sink, op, src)])
        c0, t0 = cpu_of(pids), _perf()
        ray.get(src.run.remote(n, batch))
        wall = _perf() - t0
        cpu = cpu_of(pids) - c0
        lat = ray.get(sink.result.remote())
        for a in (sink, op, src):
            ray.kill(a)
        return Run(wall, cpu, lat)

    return run


def local_cluster(n_workers: int = 2) -> tuple[Any, Any, list[int]]:
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
    pids = list(client.run(os.getpid).values())
    return cluster, client, pids


def settle() -> None:
    asyncio.run(asyncio.sleep(0.2))
