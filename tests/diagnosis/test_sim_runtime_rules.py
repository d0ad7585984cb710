"""The simulator follows the runtime's own rules where they shape latency: how many
packets a step takes (``paced_take``) and how threads of one process take turns
on the GIL (``switch_s``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core.compiler.settings import paced_take, step_budget_s
from sage_core.diagnosis import ServiceModel, simulate
from sage_core.diagnosis.model import JobModel
from sage_core.diagnosis.sim import QUANTILES
from tests.diagnosis.conftest import STAGE_COSTS, fake_random_chain


def _paced(model: JobModel, budget_s: float, most: int = 64) -> JobModel:
    return dataclasses.replace(model, step_budget_s=budget_s, max_packets=most)


def test_the_step_budget_is_the_linger_capped_by_a_quarter_of_the_target() -> None:
    assert step_budget_s(1.0, 5.0) == pytest.approx(0.001)
    assert step_budget_s(4.0, 5.0) == pytest.approx(0.00125)
    assert step_budget_s(0.0, 8.0) == pytest.approx(0.002)


@given(
    popped=st.integers(0, 200),
    took=st.floats(0.0, 1.0),
    least=st.integers(1, 16),
    most=st.integers(16, 128),
)
def test_a_paced_take_stays_between_the_batch_and_max_packets(
    popped: int, took: float, least: int, most: int
) -> None:
    take = paced_take(popped, took, budget_s=0.001, least=least, most=most)
    if not popped:
        assert take is None
    else:
        assert take is not None and least <= take <= most


def test_slow_steps_take_one_packet_and_fast_steps_take_the_backlog(
    chain: Any, svc: Any
) -> None:
    """A step of 4 ms per packet against a 1 ms budget takes one packet at a time,
    as the runtime's replica does; one of 10 us takes what is queued."""

    def sizes(cost: float) -> list[int]:
        model = chain(
            arrivals=svc("det", 1e-6),
            stages=[("op", svc("det", cost), 1)],
            items=600,
            capacity=8,
        )
        return simulate(_paced(model, 0.001)).operators["op"]["batch_sizes"]

    assert sizes(0.004) == [1]
    assert max(sizes(0.00001)) > 1


def test_without_pacing_a_step_takes_max_packets(chain: Any, svc: Any) -> None:
    model = chain(
        arrivals=svc("det", 1e-6),
        stages=[("op", svc("det", 0.004), 1)],
        items=600,
        capacity=8,
    )
    got = simulate(_paced(model, 0.0)).operators["op"]["batch_sizes"]
    assert max(got) == 8


def _busy_op_and_sink(
    chain: Any, svc: Any, switch_s: float, op_s: float = 0.004
) -> JobModel:
    """src -> op (``op_s`` per packet) -> sink (10 us), all threads of one
    process."""
    model = chain(
        arrivals=svc("det", 1e-6),
        stages=[("op", svc("det", op_s), 1), ("sink", svc("det", 0.00001), 1)],
        items=400,
        capacity=4,
        slots=1,
    )
    return dataclasses.replace(_paced(model, 0.001), switch_s=switch_s)


def test_a_sink_beside_a_busy_operator_waits_a_switch_interval_for_the_gil(
    chain: Any, svc: Any
) -> None:
    shared = simulate(_busy_op_and_sink(chain, svc, 0.0))
    turns = simulate(_busy_op_and_sink(chain, svc, 0.005))
    # the same work on one CPU either way
    assert turns.throughput == pytest.approx(shared.throughput, rel=0.02)
    # a packet that wakes the sink waits a whole interval for the operator to
    # drop the GIL; the one queued behind it meanwhile goes right after it
    extra = {q: turns.quantiles_ms[q] - shared.quantiles_ms[q] for q in QUANTILES}
    assert 4.0 < extra[0.75] <= 5.0 + 0.1
    # the source waits for the GIL too, and a dropped GIL goes to either waiter:
    # at the tail the sink's packet waits out the source's turns as well
    assert 2 * 5.0 < extra[0.99] <= 5 * 5.0


def test_which_waiting_thread_gets_the_gil_is_drawn_not_queued(
    chain: Any, svc: Any
) -> None:
    """Three busy operators on one process: under a first-come order each waits
    exactly two turns; drawn, one sometimes waits more, and the tail widens."""
    model = chain(
        arrivals=svc("det", 1e-6),
        stages=[("a", svc("det", 0.004), 1), ("b", svc("det", 0.004), 1)],
        items=400,
        capacity=4,
        slots=1,
    )
    model = dataclasses.replace(_paced(model, 0.001), switch_s=0.005)
    got = [simulate(model, seed=s) for s in range(3)]
    spread = [r.quantiles_ms[0.99] - r.quantiles_ms[0.5] for r in got]
    assert all(s > 1.5 * 5.0 for s in spread)  # first-come: 5.0 in every seed
    assert len({round(r.quantiles_ms[0.99], 3) for r in got}) > 1  # the seed draws


def test_a_thread_alone_never_waits_for_the_gil(chain: Any, svc: Any) -> None:
    model = chain(
        arrivals=svc("det", 0.01),
        stages=[("op", svc("det", 0.001), 1)],
        items=100,
        capacity=4,
        slots=1,
        worker_of={"src/0": "elsewhere"},
    )
    alone = dataclasses.replace(model, switch_s=0.005)
    assert simulate(alone).quantiles_ms[0.99] == pytest.approx(
        simulate(model).quantiles_ms[0.99], rel=0.01
    )


@given(STAGE_COSTS, st.integers(1, 3), st.integers(1, 3))
def test_under_gil_turns_every_item_arrives_at_the_speed_of_sharing(
    costs: list[float], par: int, capacity: int
) -> None:
    """Turns change who waits, not how much work the process does: every item
    reaches the sink, and throughput is that of processor sharing."""
    model = fake_random_chain(costs, par, capacity, arrival_s=0.0002, slots=1)
    shared = simulate(_paced(model, 0.001))
    turns = simulate(dataclasses.replace(_paced(model, 0.001), switch_s=0.005))
    assert turns.items == 300
    assert turns.throughput == pytest.approx(shared.throughput, rel=0.1)


def test_an_engine_batches_calls_whatever_the_switch_interval(
    engine_model: Any,
) -> None:
    svc = ServiceModel({k: (0.01 + 0.001 * k,) * 5 for k in (1, 4, 8)})
    model = engine_model(svc, 4)
    turns = dataclasses.replace(model, switch_s=0.005)
    assert simulate(turns).throughput == pytest.approx(
        simulate(model).throughput, rel=0.01
    )


@settings(max_examples=30)
@given(every=st.integers(2, 16), replicas=st.integers(2, 16))
def test_sampled_traces_spread_over_round_robin_replicas(
    every: int, replicas: int
) -> None:
    """One source packet in ``every`` starts a trace, and round-robin sends packet
    ``b`` to replica ``b % replicas``: every replica's path gets its share of the
    traces (a periodic choice would trace one replica only when the two agree)."""
    from sage_core.runtime.worker import traced

    batches = range(1, 1000 * replicas * every + 1)
    hits = [b % replicas for b in batches if traced(b, every)]
    assert len(hits) == pytest.approx(len(batches) / every, rel=0.02)
    for r in range(replicas):
        assert hits.count(r) == pytest.approx(len(hits) / replicas, rel=0.1)


def _on_one_loop(chain: Any, svc: Any, op_s: float) -> JobModel:
    """``_busy_op_and_sink`` with every replica on one Dask worker's event loop
    (``TaskModel.loop``)."""
    model = _busy_op_and_sink(chain, svc, 0.005, op_s)
    for t in model.tasks:
        t.loop = True
    return model


def test_steps_on_an_event_loop_run_to_their_end_in_turn(chain: Any, svc: Any) -> None:
    """No switch interval on a loop: the sink's packet waits for the operator's
    step to end, never for a 5 ms interval; and the operator, started once the
    source first blocked, keeps the queue it found full (the source and it take
    one step each in turn). Each takes its turn's work when the turn comes: the
    operator pops its packet as its step starts and the source, woken by that
    pop, pushes in its own turn, after the step; so a packet enters a queue of 4
    behind the 3 the operator has not taken and waits for their steps only (the
    runs of everything on one worker show 7 of an 8-packet window)."""
    got = simulate(_on_one_loop(chain, svc, 0.002))
    op, sink = got.operators["op"], got.operators["sink"]
    assert sink["queue_wait_ms"] <= 2.0 + 0.1
    assert op["queue_wait_ms"] == pytest.approx(3 * 2.0, abs=0.2)
    threads = _on_one_loop(chain, svc, 0.002)
    for t in threads.tasks:
        t.loop = False  # the same replicas as threads under the GIL
    assert simulate(threads).operators["sink"]["queue_wait_ms"] > 2.0 + 0.1
    assert got.throughput == pytest.approx(simulate(threads).throughput, rel=0.05)


def test_a_step_longer_than_the_offload_limit_leaves_the_loop(
    chain: Any, svc: Any
) -> None:
    """The runtime moves steps computing past ``offload_cpu_s`` to a thread, and so
    does the model, by the same rule (``LoopSteps``) fed the modelled steps: the
    worker is back to GIL turns (a queue that fills as threads let it, a sink
    waiting for switch intervals)."""
    from sage_core.compiler.settings import offload_cpu_s
    from sage_core.diagnosis.sim import Simulator

    inline = Simulator(_on_one_loop(chain, svc, 0.002))
    inline.run()
    assert inline.workers["w"].loop
    heavy = Simulator(_on_one_loop(chain, svc, 1.5 * offload_cpu_s()))
    assert heavy.workers["w"].loop  # as recorded, until a step says otherwise
    heavy.run()
    assert not heavy.workers["w"].loop and heavy.workers["w"].turns


def test_the_loop_rule_moves_steps_as_the_runtime_does() -> None:
    """``LoopSteps``, the rule of ``dask_actor`` and of the model: a probed step
    past the limit moves the steps; on the loop, one slow step does not (a loaded
    box), three in a row do, and so does one stall."""
    from sage_core.compiler.settings import (
        OFFLOAD_STALL_S,
        PROBE_STEPS,
        LoopSteps,
        offload_cpu_s,
    )

    limit = offload_cpu_s()
    assert LoopSteps().offload(1.5 * limit, 1.5 * limit)
    steps = LoopSteps()
    assert not any(steps.offload(0.5 * limit, 0.5 * limit) for _ in range(PROBE_STEPS))
    assert not steps.probing
    slow = [steps.offload(1.5 * limit, 1.5 * limit) for _ in range(2)]
    assert slow == [False, False]
    assert not steps.offload(0.5 * limit, 0.5 * limit)  # the run is broken
    assert [steps.offload(1.5 * limit, 1.5 * limit) for _ in range(3)] == [
        False,
        False,
        True,
    ]
    stalled = LoopSteps(probing=0)
    assert stalled.offload(0.5 * limit, OFFLOAD_STALL_S * 1.1)


def test_a_busy_loop_reads_packets_late_and_gives_credit_back_after_the_step(
    chain: Any, svc: Any, monkeypatch: Any
) -> None:
    """A packet from another worker reaches the queue of a replica whose loop runs
    4 ms steps ``LOOP_PASSES`` passes later (12 ms: the traces' transit into such a
    worker is 14.6-15.1 ms behind 4.8 ms steps), and the credit of the packets a
    step took comes back once the step ends: of the 4-packet window's 24 ms end
    to end, 3 ms are queue wait on the loop, 12 ms without the passes, 16 ms with
    the replica's steps in a thread of its own (no loop, no held credit)."""
    from sage_core.diagnosis import flow

    def two_workers(loop: bool) -> JobModel:
        model = chain(
            arrivals=svc("det", 1e-6),
            stages=[("op", svc("det", 0.004), 1)],
            items=400,
            capacity=4,
            slots=1,
            worker_of={"src/0": "a", "op/0": "b"},
        )
        model.task("op").loop = loop
        return _paced(model, 0.001)

    on_loop = simulate(two_workers(True))
    threads = simulate(two_workers(False))
    assert on_loop.operators["op"]["queue_wait_ms"] == pytest.approx(3.0, abs=0.5)
    assert threads.operators["op"]["queue_wait_ms"] == pytest.approx(16.0, abs=0.5)
    assert on_loop.p50_ms == pytest.approx(threads.p50_ms, rel=0.02)
    monkeypatch.setattr(flow, "LOOP_PASSES", 0)
    read_at_once = simulate(two_workers(True)).operators["op"]["queue_wait_ms"]
    assert read_at_once == pytest.approx(12.0, abs=0.5)


def test_a_loop_turn_is_a_step_and_its_send_then_the_next_replica() -> None:
    """On an event loop a replica's step and the send of its output are one turn
    (no await between them); its next step waits behind the replicas that became
    ready meanwhile."""
    from sage_core.diagnosis.servers import Server

    loop = Server(1, loop=True)
    loop.active.update({"src": 1.0, "sink": 1.0})
    loop.joined("src", 0.0)
    loop.joined("sink", 0.0)
    assert loop.holder == "src" and loop.switch_due() is None  # no interval
    loop.joined("src", 1.0, follows=True)  # sending what the step made
    assert loop.holder == "src"
    loop.joined("src", 1.5)  # its next step
    assert loop.holder == "sink" and list(loop.waiting) == ["src"]


def test_each_sender_of_a_dask_replica_has_credits_of_its_own(
    chain: Any, svc: Any
) -> None:
    """A Dask replica splits its queue into one quota per upstream replica
    (``quota``, as ``transport.Inbox`` does): two operator replicas sending to a
    sink of 4 packets have 2 each, and neither ever has more in it. The local
    runtime's senders share the queue."""
    from sage_core.diagnosis.sim import Simulator

    model = chain(
        arrivals=svc("det", 1e-6),
        stages=[("op", svc("det", 0.001), 2), ("sink", svc("det", 0.004), 1)],
        items=200,
        capacity=4,
        slots=1,
        worker_of={"op/0": "a", "op/1": "b", "sink/0": "c"},
    )
    model.runtime = "dask"
    sim = Simulator(model)
    sink = sim.reps["sink/0"]
    most: dict[str, int] = {}
    push = sim._push_out

    def watched(r: Any) -> None:
        push(r)
        for sender, n in sink.owed.items():
            most[sender] = max(most.get(sender, 0), n)

    sim._push_out = watched  # type: ignore[method-assign]
    assert sim.run().items == 200
    assert sink.quota == 2 and most == {"op/0": 2, "op/1": 2}
    model.runtime = "local"
    assert Simulator(model).reps["sink/0"].quota == 0
