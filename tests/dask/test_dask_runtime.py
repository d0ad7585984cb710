"""The Dask runtime on an in-process cluster: same results as the local runtime,
named failures, cancel, placement checks at submit, job records."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from sage_core import Contract, JobFailed, LocalEnvironment, MapFunction, SinkFunction
from sage_core.api.dask_environment import DaskEnvironment
from sage_core.compiler import PlacementError
from sage_core.observe.records import load_record
from sage_core.runtime.operators import OperatorFailure


class Count(MapFunction):
    contract = Contract(state="stateful")

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[int, int] = {}

    def map(self, item: int) -> tuple[int, int]:
        key = item % 7
        self.seen[key] = self.seen.get(key, 0) + 1
        return key, self.seen[key]

    def get_state(self) -> dict[int, int]:
        return dict(self.seen)


def _pipeline(env: Any, n: int = 3000) -> None:
    s = env.from_collection(list(range(n)), parallelism=2)
    s = s.map(lambda x: x * 3 + 1, parallelism=2).filter(lambda x: x % 5 != 0)
    s = s.key_by(lambda x: x % 7).map(Count, parallelism=3, name="count")
    s.flat_map(lambda kv: [kv, kv], parallelism=2).sink("collect", parallelism=2)


def _dask(client: Any, name: str, **kw: Any) -> DaskEnvironment:
    return DaskEnvironment(name, client=client, **kw)


@pytest.mark.parametrize("policy", ["round-robin", "load-aware-spread", "fifo"])
def test_keyed_pipeline_equals_the_local_runtime(embedded: Any, policy: str) -> None:
    local = LocalEnvironment("keyed")
    _pipeline(local)
    expected = local.execute(timeout=60)
    env = _dask(embedded, "keyed", policy=policy, buffer_size=16, queue_capacity=4)
    _pipeline(env)
    job = env.submit()
    got = job.wait(timeout=120)
    assert got.status == "succeeded"
    assert Counter(got.collected()) == Counter(expected.collected())
    merged: dict[int, int] = {}
    for part in got.state_of("count"):
        assert not set(part) & set(merged)  # each key lives on one replica
        merged.update(part)
    assert merged == {k: v for p in expected.state_of("count") for k, v in p.items()}
    workers = {s["worker"] for s in got.metrics["replicas"].values()}
    assert len(workers) == 2  # replicas really ran on both workers
    assert got.metrics["operators"]["count"]["items_in"] == len(got.collected()) // 2


def test_operator_error_fails_the_job_naming_operator_replica_and_item(
    embedded: Any,
) -> None:
    def boom(x: int) -> int:
        if x == 77:
            raise ValueError("bad item")
        return x

    env = _dask(embedded, "boom", chaining=False)
    env.from_collection(list(range(500))).map(boom, name="boom").sink("collect")
    job = env.submit()
    with pytest.raises(JobFailed) as info:
        job.wait(timeout=60)
    cause = info.value.cause
    assert isinstance(cause, OperatorFailure)
    assert cause.operator == "boom" and cause.replica == "boom#0" and cause.item == 77
    assert "ValueError: bad item" in str(cause)
    assert job.status() == "failed"
    assert load_record(job.job_id)["status"] == "failed"


def test_dead_letter_keeps_the_job_running(embedded: Any) -> None:
    env = _dask(embedded, "dl", chaining=False)
    env.from_collection(list(range(100))).map(
        lambda x: 1 // (x % 10), on_error="dead-letter", name="inv"
    ).sink("collect")
    result = env.submit().wait(timeout=60)
    assert len(result.collected()) == 90
    assert sorted(r["item"] for r in result.dead_letters) == list(range(0, 100, 10))


def test_unsatisfiable_contract_fails_at_submit_naming_resource_and_workers(
    embedded: Any,
) -> None:
    env = _dask(embedded, "tpu")
    env.from_collection([1]).map(lambda x: x, contract={"resources": {"TPU": 1}}).sink(
        "collect"
    )
    with pytest.raises(PlacementError) as info:
        env.submit()
    message = str(info.value)
    assert "TPU=1" in message and "Workers seen: 0 (" in message
    assert "1 (" in message and "'GPU': 1" in message


def test_gpu_operator_runs_on_the_gpu_worker(embedded: Any) -> None:
    env = _dask(embedded, "gpu", chaining=False)
    env.from_collection(list(range(10))).map(
        lambda x: -x, contract={"gpu": 1}, name="model"
    ).sink("collect")
    job = env.submit()
    result = job.wait(timeout=60)
    gpu_address = next(
        a
        for a, w in embedded.scheduler_info(n_workers=-1)["workers"].items()
        if w["resources"].get("GPU")
    )
    assert result.metrics["replicas"]["model#0"]["worker"] == gpu_address
    assert sorted(result.collected()) == list(range(-9, 1))
    decision = next(d for d in job.placement() if d["replica"] == "model#0")
    assert "needs GPU=1" in next(iter(decision["filters"][0]["removed"].values()))


def test_cancel_stops_a_running_job_promptly(embedded: Any) -> None:
    started = threading.Event()

    def endless() -> Any:
        i = 0
        while True:
            i += 1
            yield i

    class Slow(SinkFunction):
        def sink(self, item: int) -> None:
            time.sleep(0.001)

    env = _dask(embedded, "cancel", chaining=False, queue_capacity=2, buffer_size=4)
    env.from_source(endless).map(lambda x: x).sink(Slow)
    job = env.submit()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not started.is_set():
        items = job.metrics()["operators"].get("Slow", {}).get("items_in", 0)
        if items:
            started.set()
        time.sleep(0.1)
    assert started.is_set(), "the sink never received an item"
    t0 = time.monotonic()
    job.cancel()
    result = job.wait(timeout=30)
    assert result.status == "cancelled"
    assert time.monotonic() - t0 < 20
    # bounded: the source could not run far ahead of the slow sink
    snap = result.metrics["replicas"]
    assert (
        snap["map#0"]["queue"]["high_watermark"] <= snap["map#0"]["queue"]["capacity"]
    )


def test_job_record_holds_every_placement_decision(embedded: Any) -> None:
    env = _dask(embedded, "record", policy="round-robin", chaining=False)
    env.from_collection([1, 2, 3]).map(lambda x: x, parallelism=2).sink("collect")
    job = env.submit()
    job.wait(timeout=60)
    record = load_record(job.job_id[:-2])  # unique prefix works
    assert record["status"] == "succeeded"
    assert record["policy"] == "round-robin"
    replicas = record["plan"]["replicas"]
    assert {r["id"] for r in replicas} == {
        "collection#0",
        "map#0",
        "map#1",
        "collect#0",
    }
    assert all(r["placement"]["candidates"] for r in replicas)
