"""A Dask worker's event loop spends CPU of its own (pickling packets, actor calls,
sockets) beside the steps it runs: the replicas report both, the diagnosis model takes
the difference out of the time the services had and charges it to crossing packets."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sage_core.api.dask_environment import DaskEnvironment
from sage_core.diagnosis import job_model, record_of
from sage_core.diagnosis.whatif import calibrate_transport


def _work(item: int) -> int:
    end = time.thread_time() + 0.0002
    while time.thread_time() < end:
        pass
    return item


def test_replicas_report_their_loops_cpu_and_the_model_turns_it_into_overhead(
    embedded: Any,
) -> None:
    env = DaskEnvironment(
        "loop-cpu",
        client=embedded,
        buffer_size=1,
        policy="round-robin",
        chaining=False,
    )
    (
        env.from_collection(list(range(600)), name="src")
        .map(_work, name="a")
        .map(_work, name="b")
        .sink("collect", name="sink")
    )
    job = env.submit()
    result = job.wait(timeout=120)
    assert result.status == "succeeded"
    snaps = result.metrics["replicas"]
    workers = {s["worker"] for s in snaps.values()}
    assert len(workers) == 2  # packets crossed workers
    for snap in snaps.values():
        assert snap["loop_cpu_s"] > 0
        assert 0 <= snap["loop_step_cpu_s"] <= snap["loop_cpu_s"] + 1e-3
    model = job_model(record_of(job.plan, result, runtime="dask"))
    assert len(model.overhead_s) == len(workers)
    # 600 one-item packets crossed workers at least once: the loops did that work
    assert sum(model.overhead_s.values()) > 0
    per_packet = calibrate_transport(model)
    assert per_packet == pytest.approx(
        sum(model.overhead_s.values()) / _crossed(model), rel=0.25
    )


def _crossed(model: Any) -> int:
    """Packets that crossed workers in the model's plan (one item per packet)."""
    out = 0
    for ch in model.channels:
        src = model.task(ch.src_task)
        dst = model.task(ch.dst_task)
        if not src.replicas or not dst.replicas:
            continue
        a, b = model.worker_of[src.replicas[0]], model.worker_of[dst.replicas[0]]
        out += 600 if a != b else 0
    return out


def test_a_loops_overhead_is_taken_out_of_the_time_its_services_had() -> None:
    from sage_core.diagnosis.model import _deflation, _overhead

    snaps = {
        "a#0": {"service_s": 6.0, "loop_cpu_s": 3.0, "loop_step_cpu_s": 1.0},
        "b#0": {"service_s": 2.0, "loop_cpu_s": 2.5, "loop_step_cpu_s": 0.0},
        "c#0": {"service_s": 3.0, "loop_cpu_s": 0.5, "loop_step_cpu_s": 0.4},
    }
    worker_of = {"a#0": "w1", "b#0": "w1", "c#0": "w2"}
    overhead = _overhead(snaps, worker_of)
    # one loop per worker: its longest window, less the steps it ran
    assert overhead == pytest.approx({"w1": 2.0, "w2": 0.1})
    # w1's services ran 8 s in a 10 s run whose loop took 2 s of that CPU: they
    # had 8 s, no deflation; with 3 s of overhead they had 7 s
    assert _deflation(snaps, worker_of, 10.0, set(), overhead)["w1"] == 1.0
    heavier = {"w1": 3.0, "w2": 0.1}
    got = _deflation(snaps, worker_of, 10.0, set(), heavier)
    assert got["w1"] == pytest.approx(7.0 / 8.0)
    assert got["w2"] == 1.0
    # local runs report no loop: nothing is taken out
    assert _overhead({"a#0": {"service_s": 1.0}}, {"a#0": "w"}) == {}
