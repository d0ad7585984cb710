"""The ``/sage`` page's diagnosis panel: ``/sage/api/diagnosis?job=ID`` gives the
verdict ``sage diagnose`` gives, from the scheduler's board, for a running job."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sage_core.observe.jobboard import JobBoard, board_of
from sage_core.observe.verdict import VerdictCache, verdict_payload
from tests.diagnosis.test_cli_diagnosis import drop, slow


class SchedulerDouble:
    """Test double of a scheduler: only the ``plugins`` mapping the routes read."""

    def __init__(self, board: JobBoard | None) -> None:
        self.plugins = {} if board is None else {"sage-jobs": _Holder(board)}


class _Holder:
    def __init__(self, board: JobBoard) -> None:
        self.board = board


def test_the_panel_names_the_bottleneck_of_a_running_dask_job(
    sage_home: Path, dashboard_get: Any
) -> None:
    from sage_core.api.dask_environment import DaskEnvironment

    env = DaskEnvironment("panel", n_workers=2, chaining=False, buffer_size=8)
    try:
        env.client.wait_for_workers(2)
        s = env.from_source("range", stop=400_000, name="nums")
        s.map(slow, name="slow").sink(drop, name="out")
        job = env.submit()
        scheduler = env.client.cluster.scheduler  # a LocalCluster's, in this process
        board = board_of(scheduler)
        assert board is not None
        deadline = time.monotonic() + 60
        out: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = dashboard_get(
                scheduler, f"/sage/api/diagnosis?job={job.job_id[:8]}"
            )
            assert response.code == 200
            out = json.loads(response.body)
            if "bottleneck" in out:
                break
            assert "error" in out, out  # not diagnosable yet: says why
            time.sleep(0.5)
        assert job.status() == "running", out
        assert out["job"] == job.job_id
        assert out["bottleneck"]["operator"] == "slow"
        assert out["bottleneck"]["class"] == "compute"
        assert 1 <= len(out["recommendations"]) <= 3
        assert all(r["predicted"]["throughput"] > 0 for r in out["recommendations"])
        job.cancel()
        job.wait(60)
    finally:
        env.close()


def test_an_unknown_job_is_a_404_with_the_reason(dashboard_get: Any) -> None:
    for server in (SchedulerDouble(JobBoard()), SchedulerDouble(None)):
        response = dashboard_get(server, "/sage/api/diagnosis?job=nope")
        assert response.code == 404
        assert json.loads(response.body) == {
            "job": "nope",
            "error": "no job 'nope' on this scheduler",
        }


def test_a_job_that_reported_nothing_yet_says_so() -> None:
    board = JobBoard()
    board.submit({"job": "j-1", "status": "running", "plan": {}})
    assert verdict_payload(board, "j-1") == {
        "job": "j-1",
        "error": "no replica has reported counters yet",
    }


def test_the_page_has_the_panel(dashboard_get: Any) -> None:
    response = dashboard_get(None, "/sage")
    assert b'id="diagnosis"' in response.body
    assert b"sage/api/diagnosis?job=" in response.body


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_verdict_is_reused_for_its_ttl_then_recomputed() -> None:
    clock, calls = Clock(), []
    cache = VerdictCache(ttl_s=5.0, clock=clock)

    def compute(tag: str) -> Any:
        return lambda: calls.append(tag) or {"tag": tag}

    async def main() -> None:
        assert await cache.get("a", False, compute("a1")) == {"tag": "a1"}
        clock.now += 4.9
        assert await cache.get("a", False, compute("a2")) == {"tag": "a1"}
        assert await cache.get("b", False, compute("b1")) == {"tag": "b1"}
        clock.now += 0.2
        assert await cache.get("a", False, compute("a3")) == {"tag": "a3"}
        # a finished job's verdict is kept for good
        assert await cache.get("c", True, compute("c1")) == {"tag": "c1"}
        clock.now += 3600
        assert await cache.get("c", True, compute("c2")) == {"tag": "c1"}

    asyncio.run(main())
    assert calls == ["a1", "b1", "a3", "c1"]


def test_one_slow_computation_serves_every_page_that_asks_meanwhile() -> None:
    """The dashboard polls every second; a verdict that takes seconds of CPU must
    not be computed once per poll (it starved the scheduler of its GIL)."""
    clock, calls = Clock(), []
    cache = VerdictCache(ttl_s=5.0, clock=clock)
    gate = threading.Event()

    def slow() -> dict[str, Any]:
        calls.append("slow")
        gate.wait(10)
        return {"tag": "slow"}

    async def main() -> None:
        first = asyncio.ensure_future(cache.get("a", False, slow))
        await asyncio.sleep(0.05)
        others = [asyncio.ensure_future(cache.get("a", False, slow)) for _ in range(5)]
        await asyncio.sleep(0.05)
        gate.set()
        got = await asyncio.gather(first, *others)
        assert got == [{"tag": "slow"}] * 6

    asyncio.run(main())
    assert calls == ["slow"]


def test_a_verdict_that_took_long_is_kept_twice_as_long_and_errors_reach_all() -> None:
    clock, calls = Clock(), []
    cache = VerdictCache(ttl_s=1.0, clock=clock)

    def timed(tag: str, seconds: float) -> Any:
        def run() -> dict[str, Any]:
            calls.append(tag)
            clock.now += seconds  # the time the computation takes
            return {"tag": tag}

        return run

    def broken() -> dict[str, Any]:
        raise RuntimeError("no model")

    async def main() -> None:
        assert await cache.get("a", False, timed("a1", 3.0)) == {"tag": "a1"}
        clock.now += 5.9  # < 2 x 3 s: still kept although ttl_s is 1 s
        assert await cache.get("a", False, timed("a2", 0.1)) == {"tag": "a1"}
        clock.now += 0.2
        assert await cache.get("a", False, timed("a3", 0.1)) == {"tag": "a3"}
        with pytest.raises(RuntimeError, match="no model"):
            await cache.get("b", False, broken)
        assert await cache.get("b", False, timed("b1", 0.0)) == {"tag": "b1"}

    asyncio.run(main())
    assert calls == ["a1", "a3", "b1"]
