"""Sampled traces account for a packet's whole time, hop by hop, and a step's
backpressure is charged to that step's own hops and packets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from sage_core import LocalEnvironment


def slow_sink(item: Any) -> None:
    time.sleep(0.001)


def _traces(path: Path) -> list[dict[str, Any]]:
    got = [json.loads(line) for line in path.read_text().splitlines()]
    assert got and all(t["outcome"] == "sink" for t in got)
    return got


def _accounted(t: dict[str, Any]) -> float:
    return t.get("source_blocked_s", 0.0) + sum(
        h["transit_s"] + h["queue_wait_s"] + h["service_s"] + h["blocked_s"]
        for h in t["hops"]
    )


def _run(tmp_path: Path, *, chaining: bool, kept: bool = False) -> list[dict[str, Any]]:
    """source -> map -> a slow sink behind a one-packet queue: the upstream
    blocks on nearly every packet. The traces as written to the trace file, or as
    ``kept`` in memory (the job record's)."""
    path = tmp_path / "traces.jsonl"
    env = LocalEnvironment(
        "timed",
        chaining=chaining,
        trace_every=1,
        trace_path=str(path),
        buffer_size=4,
        queue_capacity=1,
    )
    env.from_collection(range(400)).map(lambda x: x + 1).sink(slow_sink, parallelism=2)
    result = env.execute(timeout=60)
    return result.traces if kept else _traces(path)


@pytest.mark.parametrize("chaining", [False, True])
def test_hops_account_for_a_packets_time_and_nothing_twice(
    tmp_path: Path, chaining: bool
) -> None:
    traces = _run(tmp_path, chaining=chaining)
    for t in traces:
        assert all(h["transit_s"] >= 0.0 for h in t["hops"])
        # transit, queue, service and blocked are consecutive: their sum never
        # exceeds the end-to-end time (1 ms of clock reads between them)
        assert _accounted(t) <= t["end_to_end_s"] + 1e-3
    coverage = sorted(_accounted(t) / t["end_to_end_s"] for t in traces)
    assert coverage[len(coverage) // 2] > 0.9


def test_blocking_goes_to_the_step_that_blocked_not_to_earlier_ones(
    tmp_path: Path,
) -> None:
    """A chained source's hops were charged every later step's blocking too: the
    first traces kept in memory came out blocked for most of the run."""
    traces = _run(tmp_path, chaining=True, kept=True)
    blocked = [sum(h["blocked_s"] for h in t["hops"]) for t in traces]
    assert max(blocked) < 0.5 * sum(blocked)
    for t, b in zip(traces, blocked, strict=True):
        assert b <= t["end_to_end_s"]


def test_a_source_that_waits_for_room_records_it(tmp_path: Path) -> None:
    traces = _run(tmp_path, chaining=False)
    waited = [t.get("source_blocked_s", 0.0) for t in traces]
    # the sink takes 4 ms a packet and the source makes one in microseconds: the
    # source waits (about half its packets, behind the map that waits too)
    assert sum(w > 0.001 for w in waited) > len(waited) // 5
    assert sum(waited) > 0.05 * sum(t["end_to_end_s"] for t in traces)
