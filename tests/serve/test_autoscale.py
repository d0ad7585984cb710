"""Replica autoscaling of served pipelines: decisions stay in range and need a
sustained signal, and a rolled job loses or duplicates no request."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import LocalEnvironment, PipelineServer, ServeError
from sage_core.serve.autoscale import (
    AutoscaleError,
    Autoscaler,
    ScaleRange,
    parse_range,
)


def _replicas(
    op: str, depths: list[int], service_s: float = 0.0
) -> dict[str, dict[str, Any]]:
    return {
        f"{op}#{i}": {"task": op, "queue": {"depth": d}, "service_s": service_s}
        for i, d in enumerate(depths)
    }


@settings(max_examples=60, deadline=None)
@given(
    lo=st.integers(1, 4),
    span=st.integers(0, 6),
    samples=st.lists(st.integers(0, 20), min_size=1, max_size=60),
)
def test_decisions_stay_in_range_and_follow_a_sustained_signal(
    lo: int, span: int, samples: list[int]
) -> None:
    rng = ScaleRange(lo, lo + span)
    scaler = Autoscaler({"op": rng}, target_depth=2.0, up_after=3, down_after=5)
    n = lo
    history: list[int] = []
    for depth in samples:
        history.append(depth)
        change = scaler.observe({"op": n}, _replicas("op", [depth] * n))
        if change:
            after = change["op"]
            assert rng.min <= after <= rng.max and after != n
            recent = history[-3:] if after > n else history[-5:]
            if after > n:
                assert len(recent) == 3 and min(recent) > 2.0
            else:
                assert len(recent) == 5 and max(recent) < 0.5
            n = after
            history.clear()
    assert [d.after for d in scaler.decisions][-1:] in ([], [n])


def test_empty_queues_of_busy_replicas_do_not_shrink_them(monkeypatch) -> None:
    """Four replicas 50% busy keep up with empty queues; two would be 100% busy."""
    clock = iter(range(1000))
    monkeypatch.setattr("sage_core.serve.autoscale.time.monotonic", lambda: next(clock))
    scaler = Autoscaler({"op": ScaleRange(1, 4)}, down_after=3)
    for t in range(10):
        assert scaler.observe({"op": 4}, _replicas("op", [0] * 4, 0.5 * t)) == {}
    idle = Autoscaler({"op": ScaleRange(1, 4)}, down_after=3)
    got = [
        idle.observe({"op": 4}, _replicas("op", [0] * 4, 0.1 * t)) for t in range(10)
    ]
    assert {"op": 2} in got  # 10% busy: two replicas would be 20% busy
    assert "at most 10% busy" in idle.decisions[0].reason


@pytest.mark.parametrize("bad", ["op", "op=1", "op=a:b", "=1:2", "op=3:2", "op=0:2"])
def test_malformed_autoscale_ranges_are_named(bad: str) -> None:
    with pytest.raises(AutoscaleError):
        parse_range(bad)


def slow_double(d: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.02)
    return {**d, "y": 2 * d["x"]}


def _env() -> LocalEnvironment:
    env = LocalEnvironment("scaled")
    env.from_collection([]).map(slow_double, name="work").sink("collect")
    return env


def test_autoscaling_refuses_operators_that_cannot_scale() -> None:
    env = LocalEnvironment("keyed")
    env.from_collection([]).key_by("x").map(slow_double, name="work").sink("collect")
    with pytest.raises(ServeError, match="cannot scale"):
        PipelineServer(env, autoscale={"work": (1, 4)})
    with pytest.raises(ServeError, match="no operator 'nope'"):
        PipelineServer(_env(), autoscale={"nope": (1, 4)})


async def _burst(url: str, xs: list[int]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return list(
            await asyncio.gather(
                *(client.post("/v1/pipelines/scaled", json={"x": x}) for x in xs)
            )
        )


def test_a_backlog_grows_the_operator_and_no_request_is_lost() -> None:
    server = PipelineServer(
        _env(), autoscale={"work": (1, 4)}, scale_interval_s=0.1, target_depth=2.0
    )
    with server.serve_in_thread() as url:
        xs = list(range(300))
        responses = asyncio.run(_burst(url, xs))
        assert [r.status_code for r in responses] == [200] * len(xs)
        assert [r.json()["y"] for r in responses] == [2 * x for x in xs]
        scaling = httpx.get(f"{url}/v1/pipelines/scaled/scaling").json()
        metrics = httpx.get(f"{url}/metrics").text
    decisions = scaling["decisions"]
    assert max(d["to"] for d in decisions) > 1, scaling  # it grew under the burst
    assert scaling["generation"] == len(decisions)  # one rolled job per decision
    assert scaling["parallelism"]["work"] == decisions[-1]["to"]
    first = decisions[0]
    assert (first["operator"], first["from"], first["to"]) == ("work", 1, 2)
    assert "queue depth above 2" in first["reason"]
    assert 'sage_serve_replicas{pipeline="scaled",operator="work"} ' in metrics
    assert server.hub is not None and server.hub.counts.get("ok") == len(xs)
