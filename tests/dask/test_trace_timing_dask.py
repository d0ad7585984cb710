"""Traces of a job on Dask account for a packet's time hop by hop, across workers,
and show the wait for credit behind a slow downstream as blocked time."""

from __future__ import annotations

import time
from typing import Any

from sage_core.api.dask_environment import DaskEnvironment


def slow_sink(item: Any) -> None:
    time.sleep(0.001)


def test_hops_add_up_across_workers_and_show_backpressure(embedded: Any) -> None:
    env = DaskEnvironment(
        "timed",
        client=embedded,
        policy="round-robin",  # source, map and sink spread over both workers
        chaining=False,
        trace_every=1,
        buffer_size=4,
        queue_capacity=1,
    )
    env.from_collection(list(range(400))).map(lambda x: x + 1).sink(slow_sink)
    got = env.submit().wait(timeout=120)
    workers = {r["worker"] for r in got.metrics["replicas"].values()}
    assert len(workers) == 2
    traces = [t for t in got.traces if t["outcome"] == "sink"]
    assert len(traces) == 100
    coverage = []
    for t in traces:
        hops = t["hops"]
        assert all(h["transit_s"] >= 0.0 for h in hops)
        accounted = t.get("source_blocked_s", 0.0) + sum(
            h["transit_s"] + h["queue_wait_s"] + h["service_s"] + h["blocked_s"]
            for h in hops
        )
        assert accounted <= t["end_to_end_s"] + 2e-3  # nothing counted twice
        coverage.append(accounted / t["end_to_end_s"])
    assert sorted(coverage)[len(coverage) // 2] > 0.9
    # the map waits for the sink's one credit: that wait is its hop's blocked time
    # (it used to stay in the sender's copy of the trace and never reach the sink)
    blocked = [t["hops"][0]["blocked_s"] for t in traces]
    assert sum(b > 0.001 for b in blocked) > len(blocked) // 4
