"""Step pacing (``ReplicaCore.pace``): how many queued packets a replica's next step
takes, from how long its last step took."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import Contract, LocalEnvironment, MapFunction
from sage_core.runtime.deadletter import DeadLetters
from sage_core.runtime.worker import ReplicaCore


class BatchOf(MapFunction):
    """A batching operator (its contract's batch size set per test)."""

    def map_batch(self, items: list[Any]) -> list[Any]:
        return items


def one_item() -> Iterator[int]:
    yield 1


def op_core(batch_size: int, **settings_: Any) -> ReplicaCore:
    """The ``ReplicaCore`` of a plan's single map replica."""
    env = LocalEnvironment("pace", chaining=False, **settings_)
    env.from_source(one_item).map(
        BatchOf, name="op", contract=Contract(batch_size=batch_size)
    ).sink("collect")
    plan = env.compile()
    rid = next(r.id for r in plan.replicas if r.task == "op")
    dead = DeadLetters(plan, "job").for_replica(rid)
    return ReplicaCore(plan, rid, job_id="job", dead_letter=dead)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 100),
    max_packets=st.integers(1, 128),
    linger_ms=st.sampled_from([0.0, 0.5, 1.0, 4.0]),
    steps=st.lists(
        st.tuples(st.integers(0, 200), st.floats(0, 1.0, allow_nan=False)), max_size=20
    ),
)
def test_a_step_takes_between_a_batch_and_max_packets(
    batch: int, max_packets: int, linger_ms: float, steps: list[tuple[int, float]]
) -> None:
    core = op_core(batch, max_packets=max_packets, linger_ms=linger_ms)
    floor = min(batch, max_packets)
    assert core.take == floor
    for popped, took in steps:
        take = core.pace(popped, took)
        assert floor <= take <= max_packets
        if popped and took > popped * core.step_budget_s:
            assert take == floor  # slow packets: one batch's worth a step


def test_cheap_steps_take_many_packets_even_without_a_linger() -> None:
    """``linger_ms=0`` asks sources not to wait; steps of cheap packets still take
    what is queued (a quarter of the latency target is their budget)."""
    core = op_core(1, linger_ms=0.0, max_packets=64)
    assert core.step_budget_s > 0
    assert core.pace(4, 1e-5) == 64
    assert core.pace(1, 0.01) == 1
