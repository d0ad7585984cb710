"""Compilation: replicas, channels, routers, chaining, placement traces, JSON plans."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import LocalEnvironment, MapFunction
from sage_core.compiler import (
    ClusterView,
    ExecutionPlan,
    PlacementError,
    PlanFormatError,
    WorkerView,
    compile_plan,
    plan_to_dot,
)
from sage_core.contract import Contract


class Counter(MapFunction):
    contract = Contract(state="stateful")

    def map(self, item: Any) -> Any:
        return item


def inc(x: int) -> int:
    return x + 1


def test_replicas_channels_and_default_routers() -> None:
    env = LocalEnvironment("shape", chaining=False)
    src = env.from_collection(range(10), parallelism=2)
    mapped = src.map(inc, parallelism=2)  # equal parallelism: forward
    mapped.key_by("k").map(Counter, parallelism=3).collect()  # keyed: key-hash
    plan = env.compile()
    assert [r.id for r in plan.replicas_of("inc")] == ["inc#0", "inc#1"]
    fwd = next(c for c in plan.channels if c.dst == "inc")
    assert fwd.partition == "forward"
    assert dict(fwd.routes) == {"collection#0": ("inc#0",), "collection#1": ("inc#1",)}
    keyed = next(c for c in plan.channels if c.dst == "Counter")
    assert keyed.router == "key-hash" and keyed.key is not None
    assert dict(keyed.routes)["inc#1"] == ("Counter#0", "Counter#1", "Counter#2")
    fan_in = next(c for c in plan.channels if c.dst == "collect")
    assert fan_in.router == "round-robin" and fan_in.partition == "routed"
    assert all(r.queue_capacity == 64 for r in plan.replicas_of("Counter"))
    assert all(r.queue_capacity == 0 for r in plan.replicas_of("collection"))


def test_chaining_fuses_only_safe_neighbours() -> None:
    env = LocalEnvironment("chain")
    s = env.from_collection(range(4)).map(inc).filter(bool)
    s.map(Counter).map(inc, name="after").collect()
    plan = env.compile()
    assert [t.operators for t in plan.tasks] == [
        ("collection", "inc", "bool"),
        ("Counter",),
        ("after", "collect"),
    ]
    env2 = LocalEnvironment("nochain", chaining=False)
    env2.from_collection(range(4)).map(inc).collect()
    assert len(env2.compile().tasks) == 3


def test_queue_capacity_from_contract_and_settings() -> None:
    env = LocalEnvironment("caps", queue_capacity=7, chaining=False)
    env.from_collection([1]).map(inc, contract={"queue_capacity": 3}).collect()
    plan = env.compile()
    caps = {r.task: r.queue_capacity for r in plan.replicas}
    assert caps == {"collection": 0, "inc": 3, "collect": 7}


def test_placement_trace_and_unsatisfiable_gpu() -> None:
    env = LocalEnvironment("place", resources={"GPU": 1})
    env.from_collection([1]).map(inc, contract={"gpu": 1}, parallelism=2).collect()
    with pytest.raises(PlacementError, match=r"inc#1.*needs GPU=1, has 0 free"):
        env.compile()
    env = LocalEnvironment("place2", resources={"GPU": 1})
    env.from_collection([1]).map(inc, contract={"gpu": 1}).collect()
    plan = env.compile()
    decision = next(r.placement for r in plan.replicas if "inc" in r.task)
    assert decision.worker == "local" and decision.policy == "local"
    assert decision.candidates[0].free["GPU"] == 1.0
    assert decision.filters[0].name == "resources" and not decision.filters[0].removed


def test_plan_json_round_trip_keeps_everything() -> None:
    env = LocalEnvironment("json", chaining=False)
    a = env.from_collection([{"k": 1}, {"k": 2}], parallelism=2)
    b = env.from_collection([(1, 2)])
    keyed = a.key_by("k").map(lambda d: d, parallelism=3)
    keyed.connect(b).co_map(inc, inc).broadcast().sink("collect", parallelism=2)
    plan = env.compile()
    again = ExecutionPlan.from_json(plan.to_json())
    assert again == plan
    assert again.to_dict() == plan.to_dict()
    lam = next(op for op in again.operators if op.ref.kind == "inline")
    assert lam.ref.obj({"k": 5}) == {"k": 5}  # the inline lambda travelled pickled
    assert next(op for op in again.operators if op.name == "collection-2").config == {
        "items": [(1, 2)]
    }
    assert "digraph" in plan_to_dot(plan)


def test_code_registered_by_value_travels_with_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module the workers do not have (registered with cloudpickle's
    register_pickle_by_value, as for Dask) ships inside the plan, not by name."""
    import cloudpickle

    (tmp_path / "user_job_ops.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("user_job_ops")
    env = LocalEnvironment("by-value")
    env.from_collection([1]).map(mod.triple).sink("collect")
    assert env.compile().operators[1].ref.kind == "import"
    cloudpickle.register_pickle_by_value(mod)
    try:
        env = LocalEnvironment("by-value")
        env.from_collection([1]).map(mod.triple).sink("collect")
        text = env.compile().to_json()
    finally:
        cloudpickle.unregister_pickle_by_value(mod)
        del sys.modules["user_job_ops"]
    (tmp_path / "user_job_ops.py").unlink()  # the "worker" cannot import it
    triple = next(op for op in ExecutionPlan.from_json(text).operators if op.ref.obj)
    assert triple.ref.kind == "inline" and triple.ref.obj(5) == 15


def test_plan_format_errors() -> None:
    with pytest.raises(PlanFormatError, match="version"):
        ExecutionPlan.from_dict({"version": 99})
    with pytest.raises(PlanFormatError, match="malformed"):
        ExecutionPlan.from_dict({"version": 1, "job": "x"})
    with pytest.raises(PlanFormatError, match="not JSON"):
        ExecutionPlan.from_json("{")


@settings(max_examples=30, deadline=None)
@given(
    p_src=st.integers(1, 4),
    p_mid=st.integers(1, 4),
    p_sink=st.integers(1, 4),
    chaining=st.booleans(),
    keyed=st.booleans(),
)
def test_every_edge_is_materialised(
    p_src: int, p_mid: int, p_sink: int, chaining: bool, keyed: bool
) -> None:
    env = LocalEnvironment("prop", chaining=chaining)
    s = env.from_collection(range(5), parallelism=p_src).map(inc, parallelism=p_mid)
    (s.key_by(str) if keyed else s).sink("collect", parallelism=p_sink)
    plan = env.compile()
    assert len(plan.replicas) == sum(t.parallelism for t in plan.tasks)
    replica_ids = {r.id for r in plan.replicas}
    for ch in plan.channels:
        srcs = {r.id for r in plan.replicas_of(ch.src_task)}
        assert {src for src, _ in ch.routes} == srcs
        for _, dsts in ch.routes:
            assert set(dsts) <= replica_ids and dsts
    assert ExecutionPlan.from_json(plan.to_json()) == plan


def test_custom_cluster_and_policy_instance() -> None:
    from sage_core.compiler import LocalPlacement

    cluster = ClusterView(
        (
            WorkerView("cpu", threads=2),
            WorkerView("gpu", threads=2, resources={"GPU": 2}),
        )
    )
    env = LocalEnvironment("multi")
    env.from_collection([1]).map(inc, contract={"gpu": 1}, parallelism=2).collect()
    plan = compile_plan(env.graph, cluster, LocalPlacement())
    chosen = {r.id: r.placement.worker for r in plan.replicas if r.task != "collection"}
    assert set(chosen.values()) <= {"gpu", "cpu"}
    gpu_decision = next(r.placement for r in plan.replicas if "inc" in r.task)
    assert gpu_decision.filters[0].removed == {"cpu": "needs GPU=1, has 0 free"}
