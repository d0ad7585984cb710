"""In-place rescaling of a plan (``compiler.rescale``): growing and shrinking an
operator keeps the plan's wiring whole, and operators that cannot change say why."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import LocalEnvironment, MapFunction, RescaleError
from sage_core.compiler import (
    ClusterView,
    ExecutionPlan,
    PlacementError,
    WorkerView,
    compile_plan,
    grow,
    shrink,
)
from sage_core.compiler.rescale import fed_by, feeds
from sage_core.contract import Contract


def double(x: int) -> int:
    return 2 * x


class Tally(MapFunction):
    contract = Contract(state="stateful")

    def map(self, item: Any) -> Any:
        return item


def _plan(src_p: int = 1, work_p: int = 1, sink_p: int = 1, **kw: Any) -> ExecutionPlan:
    env = LocalEnvironment("scaled", chaining=False, **kw)
    s = env.from_collection(range(10), parallelism=src_p)
    s.map(double, name="work", parallelism=work_p).sink("collect", parallelism=sink_p)
    return env.compile()


def _check_whole(plan: ExecutionPlan) -> None:
    """Every replica of the scaled task is fed by every upstream replica of a routed
    channel, every downstream replica has a sender, ids are unique, and the plan
    survives JSON."""
    ids = [r.id for r in plan.replicas]
    assert len(ids) == len(set(ids))
    work = {r.id for r in plan.replicas_of("work")}
    assert (
        plan.task("work").parallelism == len(work) == plan.operator("work").parallelism
    )
    for ch in plan.channels:
        srcs = {r.id for r in plan.replicas_of(ch.src_task)}
        assert {s for s, _ in ch.routes} == srcs
        for _, dsts in ch.routes:
            assert dsts and set(dsts) <= {r.id for r in plan.replicas_of(ch.dst_task)}
        fed = {d for _, dsts in ch.routes for d in dsts}
        assert fed == {r.id for r in plan.replicas_of(ch.dst_task)}
    for rid in work:
        assert feeds(plan, rid) and fed_by(plan, rid)
    assert ExecutionPlan.from_json(plan.to_json()) == plan


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    steps=st.lists(st.booleans(), max_size=12),
)
def test_grow_and_shrink_keep_the_wiring_whole(
    shape: tuple[int, int, int], steps: list[bool]
) -> None:
    """Any sequence of one-replica changes leaves a plan where nothing is cut off
    (or is refused with a RescaleError and leaves the plan as it was)."""
    plan = _plan(*shape)
    seen = {r.id for r in plan.replicas}
    index = max(r.index for r in plan.replicas_of("work")) + 1
    for up in steps:
        if up:
            plan, rid = grow(plan, "work", ClusterView.local(), index=index)
            index += 1
            assert rid not in seen  # an id is never reused
            seen.add(rid)
            assert rid in {r.id for r in plan.replicas}
        else:
            before = plan
            try:
                plan, rid = shrink(plan, "work")
            except RescaleError:
                assert plan is before
                continue
            assert rid not in {r.id for r in plan.replicas}
        _check_whole(plan)


def test_a_new_replica_is_placed_by_the_plans_policy_with_a_trace() -> None:
    """The new replica goes where the policy puts it given the replicas there:
    the GPU operator's second replica lands on the second GPU worker."""
    cluster = ClusterView(
        (
            WorkerView("a", threads=4, resources={"GPU": 1}),
            WorkerView("b", threads=4, resources={"GPU": 1}),
        )
    )
    env = LocalEnvironment("gpu", chaining=False)
    env.from_collection([1]).map(double, name="work", contract={"gpu": 1}).collect()
    plan = compile_plan(env.graph, cluster, "load-aware-spread", settings=env.settings)
    first = plan.replicas_of("work")[0].placement.worker
    grown, rid = grow(plan, "work", cluster)
    new = next(r for r in grown.replicas if r.id == rid)
    assert new.placement.worker != first
    assert new.placement.candidates and new.placement.policy == "load-aware-spread"
    with pytest.raises(PlacementError, match="GPU"):
        grow(grown, "work", cluster)  # both GPUs are taken


def test_a_forward_channel_becomes_routed_for_the_new_replica() -> None:
    plan = _plan(1, 1, 1)
    into = next(c for c in plan.channels if c.dst_task == "work")
    assert into.partition == "forward"
    grown, rid = grow(plan, "work", ClusterView.local())
    into = next(c for c in grown.channels if c.dst_task == "work")
    assert into.partition == "routed" and dict(into.routes)["collection#0"] == (
        "work#0",
        rid,
    )


@pytest.mark.parametrize(
    ("build", "why"),
    [
        (lambda s: s.map(Tally, name="work"), "stateful"),
        (lambda s: s.key_by(lambda x: x).map(double, name="work"), "keyed"),
        (lambda s: s.map(double, name="work").map(double, name="next"), "chained"),
    ],
)
def test_operators_that_cannot_change_in_place_say_why(build: Any, why: str) -> None:
    chaining = why == "chained"
    env = LocalEnvironment("no", chaining=chaining)
    build(env.from_collection(range(3))).sink("collect")
    plan = env.compile()
    with pytest.raises(RescaleError, match=why):
        grow(plan, "work", ClusterView.local())
    with pytest.raises(RescaleError, match="no operator 'nope'"):
        grow(plan, "nope", ClusterView.local())
    with pytest.raises(RescaleError, match=r"a source|chained"):
        grow(plan, "collection", ClusterView.local())


def test_checkpointed_jobs_and_last_replicas_are_refused(tmp_path: Any) -> None:
    plan = _plan(checkpoint_interval_s=1.0, checkpoint_dir=str(tmp_path))
    with pytest.raises(RescaleError, match="checkpoints"):
        grow(plan, "work", ClusterView.local())
    with pytest.raises(RescaleError, match="one replica"):
        shrink(_plan(), "work")
    # forward 2 -> 2: retiring work#1 would leave collection#1 nowhere to send
    with pytest.raises(RescaleError, match="nowhere to send"):
        shrink(_plan(2, 2, 1), "work")
