"""Placement policies: decisions, traces and resources, pure and on a real cluster."""

from __future__ import annotations

from typing import Any

import pytest
from distributed.utils_test import gen_cluster
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import Contract, plugins
from sage_core.compiler import (
    ClusterView,
    PlacementError,
    ReplicaDemand,
    WorkerView,
    compile_plan,
    resolve_policy,
)
from sage_core.runtime.cluster_view import cluster_view_async
from sage_core.runtime.dask_actor import ReplicaActor

NAMES = ["fifo", "round-robin", "load-aware-spread", "load-aware-pack", "priority"]


def _cluster(n: int = 4, gpu_on: int | None = None, threads: int = 1) -> ClusterView:
    return ClusterView(
        tuple(
            WorkerView(
                name=f"w{i}",
                address=f"tcp://10.0.0.{i}:1",
                threads=threads,
                resources={"GPU": 1.0} if i == gpu_on else {},
            )
            for i in range(n)
        )
    )


def _demands(n: int, cpu: float = 1.0, gpu: float = 0.0) -> list[ReplicaDemand]:
    return [
        ReplicaDemand(f"op#{i}", "op", i, ("op",), Contract(cpu=cpu, gpu=gpu))
        for i in range(n)
    ]


def _workers(policy: str, n: int, cluster: ClusterView, **cfg: Any) -> list[str]:
    decisions = resolve_policy(policy, **cfg).place(_demands(n), cluster)
    return [d.worker for d in decisions]


def test_every_policy_is_a_placement_plugin_with_its_own_name() -> None:
    reg = plugins.registry("placement-policy")
    for name in NAMES:
        assert reg[name].obj.name == name
        assert resolve_policy(name).name == name


def test_policies_differ_as_documented() -> None:
    cluster = _cluster(4)
    assert _workers("fifo", 6, cluster) == ["w0", "w1", "w2", "w3", "w0", "w0"]
    assert _workers("round-robin", 6, cluster) == ["w0", "w1", "w2", "w3", "w0", "w1"]
    spread = _workers("load-aware-spread", 8, cluster)
    assert sorted(spread.count(w) for w in ("w0", "w1", "w2", "w3")) == [2, 2, 2, 2]
    assert _workers("load-aware-pack", 4, cluster) == ["w0", "w0", "w1", "w1"]


def test_decision_trace_names_candidates_filters_scores_and_reason() -> None:
    decision = resolve_policy("load-aware-spread").place(
        _demands(1, gpu=1), _cluster(3, gpu_on=2)
    )[0]
    assert decision.worker == "w2"
    assert [c.worker for c in decision.candidates] == ["w0", "w1", "w2"]
    resources = decision.filters[0]
    assert resources.name == "resources"
    assert set(resources.removed) == {"w0", "w1"}
    assert "needs GPU=1" in resources.removed["w0"]
    scored = {c.worker: c.score for c in decision.candidates}
    assert scored["w0"] is None and scored["w2"] is not None
    assert decision.reason
    # the trace survives the plan's JSON round trip
    assert type(decision).from_dict(decision.to_dict()) == decision


@pytest.mark.parametrize("policy", NAMES)
def test_gpu_contract_lands_only_on_gpu_workers_and_counts_them(policy: str) -> None:
    cluster = _cluster(3, gpu_on=1)
    got = resolve_policy(policy).place(_demands(1, gpu=1), cluster)
    assert got[0].worker == "w1"
    with pytest.raises(PlacementError, match=r"op#1 \(.*needs GPU=1, has 0 free"):
        resolve_policy(policy).place(_demands(2, gpu=1), cluster)


def test_priority_keeps_low_priority_jobs_off_high_priority_workers() -> None:
    busy = WorkerView(
        name="w0",
        threads=1,
        replicas=("hi/op#0",),
        used={"cpu": 1.0},
        load={"priority": 5.0},
    )
    idle = WorkerView(name="w1", threads=1)
    cluster = ClusterView((busy, idle))
    low = resolve_policy("priority", priority=0).place(_demands(2), cluster)
    assert [d.worker for d in low] == ["w1", "w1"]
    assert "higher priority" in low[0].filters[1].removed["w0"]
    # a higher-priority job takes the idle worker first, then shares
    high = resolve_policy("priority", priority=9).place(_demands(1), cluster)
    assert high[0].worker == "w1"


@gen_cluster(
    client=True,
    nthreads=[("127.0.0.1", 1, {"resources": {"GPU": 1}}), ("127.0.0.1", 1)],
)
async def test_gpu_replica_becomes_an_actor_on_the_gpu_worker(
    c: Any, s: Any, a: Any, b: Any
) -> None:
    from sage_core import LocalEnvironment

    view = await cluster_view_async(c)
    by_address = {w.address: w for w in view.workers}
    assert by_address[a.address].resources == {"GPU": 1.0}
    assert "sage-jobs" in s.plugins

    env = LocalEnvironment("gpu", chaining=False)
    env.from_collection([1, 2, 3]).map(
        lambda x: x, contract={"gpu": 1}, name="model", parallelism=1
    ).sink("collect")
    from sage_core.compiler import compile_plan

    plan = compile_plan(env.graph, view, "round-robin", settings=env.settings)
    placed = {r.id: r.placement.worker for r in plan.replicas}
    gpu_worker = next(w.name for w in view.workers if w.address == a.address)
    assert placed["model#0"] == gpu_worker

    actors = {}
    for r in plan.replicas:
        address = next(w.address for w in view.workers if w.name == r.placement.worker)
        fut = c.submit(
            ReplicaActor,
            plan.to_json(),
            r.id,
            "gpu-job",
            actor=True,
            workers=[address],
            allow_other_workers=False,
            key=f"t-{r.id}",
        )
        actors[r.id] = await fut
    hosted = {k for k in a.state.actors}
    assert "t-model#0" in hosted
    assert "t-model#0" not in b.state.actors
    # Dask released the GPU once the constructor returned: placement must count it
    assert s.workers[a.address].used_resources["GPU"] == 0


@settings(max_examples=40, deadline=None)
@given(
    policy=st.sampled_from(NAMES),
    workers=st.integers(1, 3),
    threads=st.integers(1, 3),
    replicas=st.integers(1, 12),
    cpu=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_free_resources_in_traces_never_go_negative(
    policy: str, workers: int, threads: int, replicas: int, cpu: float
) -> None:
    decisions = resolve_policy(policy).place(
        _demands(replicas, cpu=cpu), _cluster(workers, threads=threads)
    )
    asked = {f"w{i}": 0.0 for i in range(workers)}
    for decision in decisions:
        for c in decision.candidates:
            assert min(c.free.values()) >= 0.0, (decision.replica, c)
            assert c.cpu_in_use == asked[c.worker]
            assert c.free["cpu"] == max(0.0, threads - asked[c.worker])
        asked[decision.worker] += cpu
    assert sum(asked.values()) == replicas * cpu


def test_oversubscribed_local_plan_reports_zero_free_cpu_and_the_overflow() -> None:
    from sage_core import LocalEnvironment

    env = LocalEnvironment("busy", chaining=False)
    env.from_collection(range(4)).map(abs, parallelism=3).collect()
    plan = compile_plan(
        env.graph, ClusterView((WorkerView("local", threads=2),)), "local"
    )
    last = plan.replicas[-1].placement.candidates[0]
    assert last.free["cpu"] == 0.0
    assert last.cpu_in_use == 4.0  # collection + 3 x abs before the sink
    as_json = plan.to_dict()["replicas"][-1]["placement"]["candidates"][0]
    assert as_json["free"]["cpu"] == 0.0 and as_json["cpu_in_use"] == 4.0
