"""Replica autoscaling of served pipelines: decisions stay in range and need a
sustained signal, they are applied in place (or by rolling the job where that is
refused), and no request is lost or duplicated either way."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import (
    Contract,
    LocalEnvironment,
    MapFunction,
    PipelineServer,
    ServeError,
)
from sage_core.serve.autoscale import (
    AutoscaleError,
    Autoscaler,
    Demand,
    ScaleRange,
    parse_range,
)


def _replicas(
    op: str, depths: list[int], service_s: float = 0.0, items_in: int = 0
) -> dict[str, dict[str, Any]]:
    return {
        f"{op}#{i}": {
            "task": op,
            "queue": {"depth": d},
            "service_s": service_s,
            "items_in": items_in,
        }
        for i, d in enumerate(depths)
    }


@pytest.fixture
def one_second_samples(monkeypatch) -> None:
    """The autoscaler's clock advances one second per sample."""
    clock = iter(range(1000))
    monkeypatch.setattr("sage_core.serve.autoscale.time.monotonic", lambda: next(clock))


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


def test_empty_queues_of_busy_replicas_do_not_shrink_them(one_second_samples) -> None:
    """Four replicas 50% busy keep up with empty queues; two would be 100% busy."""
    scaler = Autoscaler({"op": ScaleRange(1, 4)}, down_after=3)
    for t in range(10):
        assert scaler.observe({"op": 4}, _replicas("op", [0] * 4, 0.5 * t)) == {}
    idle = Autoscaler({"op": ScaleRange(1, 4)}, down_after=3)
    got = [
        idle.observe({"op": 4}, _replicas("op", [0] * 4, 0.1 * t)) for t in range(10)
    ]
    assert {"op": 2} in got  # 10% busy: two replicas would be 20% busy
    assert "at most 10% busy" in idle.decisions[0].reason


def test_growth_is_sized_for_the_demand_in_one_step(one_second_samples) -> None:
    """100 requests/s at 20 ms each need 2 busy replicas, 4 at most 60% busy: one
    saturated replica with a deep queue goes 1 -> 4 at once, not 1 -> 2 -> 4."""
    scaler = Autoscaler({"op": ScaleRange(1, 8)}, up_after=3, drain_s=1e9)
    changes = []
    for t in range(4):
        # one replica, busy all the time, serving 50 of the 100 arrivals per second
        snap = _replicas("op", [10], service_s=1.0 * t, items_in=50 * t)
        changes.append(scaler.observe({"op": 1}, snap, Demand(100 * t, 20 * t)))
    assert changes == [{}, {}, {"op": 4}, {}] or changes[:3] == [{}, {}, {"op": 4}]
    decision = scaler.decisions[0]
    assert (decision.before, decision.after) == (1, 4)
    assert decision.demand_per_s == pytest.approx(100.0)
    assert decision.service_s_per_item == pytest.approx(0.02)
    assert "the demand needs 4" in decision.reason


def _run(scaler: Autoscaler, n: int, samples: list[tuple[Any, ...]]) -> list[Any]:
    """Feed (depths, service_s, items_in, demand) samples to ``scaler`` with ``n``
    replicas until it decides; its changes, one per sample."""
    out = []
    for depths, service, items, demand in samples:
        out.append(
            scaler.observe({"op": n}, _replicas("op", depths, service, items), demand)
        )
        if out[-1]:
            break
    return out


def test_a_backlog_at_the_hub_grows_only_a_busy_operator(one_second_samples) -> None:
    """Shallow queues, but requests pile up at the hub: the operator grows if it is
    the one holding them back (busy), not if it mostly idles."""

    def samples(busy: float) -> list[tuple[Any, ...]]:
        return [
            ([1, 1], busy * t, 45 * t, Demand(100 * t, 5 + 5 * t)) for t in range(5)
        ]

    busy = Autoscaler({"op": ScaleRange(1, 8)}, up_after=3)
    got = _run(busy, 2, samples(0.9))
    assert got[-1] and got[-1]["op"] > 2
    assert "requests waiting at the hub" in busy.decisions[0].reason
    idle = Autoscaler({"op": ScaleRange(1, 8)}, up_after=3)
    assert _run(idle, 2, samples(0.2)) == [{}] * 5
    assert idle.decisions == []


def test_after_a_growth_the_backlog_signal_starts_over(one_second_samples) -> None:
    """The new replicas get ``up_after`` samples of their own before a backlog that
    outlived the roll grows them again."""
    scaler = Autoscaler({"op": ScaleRange(1, 16)}, up_after=3)
    n, grown_at = 2, []
    for t in range(12):
        got = scaler.observe(
            {"op": n}, _replicas("op", [1] * n, 0.9 * t, 45 * t), Demand(0, 5 + 5 * t)
        )
        if got:
            n = got["op"]
            grown_at.append(t)
    assert len(grown_at) >= 2
    assert all(b - a >= 3 for a, b in itertools.pairwise(grown_at))


def test_a_shrink_keeps_what_the_demand_needs(one_second_samples) -> None:
    """Eight replicas 30% busy: half of them would be 60% busy (too busy), so they
    stay; at 10% busy and 40 requests/s of 20 ms they go to the 4 of halving (the
    demand alone needs 2); at 20% busy, 40 ms per item and 100 requests/s arriving
    (most of them refused) the demand needs 7, so they go to 7, not 4."""
    kept = Autoscaler({"op": ScaleRange(1, 8)}, down_after=3)
    assert (
        _run(kept, 8, [([0] * 8, 0.3 * t, 15 * t, None) for t in range(6)]) == [{}] * 6
    )
    freed = Autoscaler({"op": ScaleRange(1, 8)}, down_after=3)
    got = _run(
        freed, 8, [([0] * 8, 0.1 * t, 5 * t, Demand(40 * t, 0)) for t in range(6)]
    )
    assert got[-1] == {"op": 4}
    some = Autoscaler({"op": ScaleRange(1, 8)}, down_after=3, max_busy=0.6)
    got = _run(
        some, 8, [([0] * 8, 0.2 * t, 5 * t, Demand(100 * t, 0)) for t in range(6)]
    )
    assert got[-1] == {"op": 7}


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


def test_an_autoscaled_operator_keeps_a_short_queue_so_requests_wait_at_the_hub():
    """Its replicas' queues hold 2 x target_depth packets (what a roll would strand
    in the old replicas); other operators keep theirs, and a contract wins."""
    env = LocalEnvironment("scaled")
    s = env.from_collection([]).map(slow_double, name="work")
    s = s.map(slow_double, name="other").map(
        slow_double, name="pinned", contract={"queue_capacity": 9}
    )
    s.sink("collect")
    server = PipelineServer(
        env, autoscale={"work": (1, 4), "pinned": (1, 2)}, target_depth=3.0
    )
    with server.serve_in_thread():
        plan = server.job.plan
        caps = {r.task: r.queue_capacity for r in plan.replicas}
    assert caps["work"] == 6 and caps["pinned"] == 9
    assert caps["other"] == env.settings.queue_capacity


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
    # every decision changed the running job in place: no roll, no new job
    assert scaling["generation"] == 0
    assert [c["how"] for c in scaling["changes"]] == ["in place"] * len(decisions)
    assert [(c["from"], c["to"]) for c in scaling["changes"]] == [
        (d["from"], d["to"]) for d in decisions
    ]
    assert scaling["parallelism"]["work"] == decisions[-1]["to"]
    first = decisions[0]
    assert (first["operator"], first["from"]) == ("work", 1) and first["to"] > 1
    # a backlog in the replicas' queues or one waiting at the hub with the replicas
    # busy: which one the sampler sees first depends on timing
    assert (
        "queue depth above 2" in first["reason"]
        or "requests waiting at the hub" in first["reason"]
    ), first["reason"]
    assert {"demand_per_s", "service_s_per_item"} <= set(first)
    assert 'sage_serve_replicas{pipeline="scaled",operator="work"} ' in metrics
    assert server.hub is not None and server.hub.counts.get("ok") == len(xs)


def test_a_long_step_in_progress_counts_as_busy(one_second_samples) -> None:
    """One replica in the middle of a 10 s step: its finished-step counters do not
    move, but it is busy all the time (before, its busy share read 0)."""
    scaler = Autoscaler({"op": ScaleRange(1, 4)}, down_after=2)
    for t in range(6):
        snap = _replicas("op", [0])
        snap["op#0"].update(in_step_s=float(t), in_step_items=16)
        assert scaler.observe({"op": 1}, snap) == {}
    assert scaler._busy["op"][-1] == pytest.approx(1.0)


def test_replica_metrics_report_the_step_in_progress() -> None:
    from sage_core.observe.metrics import ReplicaMetrics

    m = ReplicaMetrics("op#0", "op", ["op"])
    assert m.snapshot()["in_step_s"] == 0.0 and m.snapshot()["in_step_items"] == 0
    m.step_started, m.step_items = time.perf_counter() - 2.0, 16
    snap = m.snapshot()
    assert snap["in_step_s"] >= 2.0 and snap["in_step_items"] == 16


class StatefulDouble(MapFunction):
    """A map that declares state: its replicas cannot change in place."""

    contract = Contract(state="stateful")

    def map(self, item: dict[str, Any]) -> dict[str, Any]:
        return {**item, "y": 2 * item["x"]}


def test_an_operator_that_cannot_change_in_place_is_rolled() -> None:
    """A stateful operator's new parallelism takes a new job (generation 1),
    which answers the requests that follow; the change says why."""
    env = LocalEnvironment("scaled")
    env.from_collection([]).map(StatefulDouble, name="work").sink("collect")
    server = PipelineServer(env)
    with server.serve_in_thread() as url:
        server.rescale({"work": 2})
        scaling = httpx.get(f"{url}/v1/pipelines/scaled/scaling").json()
        responses = asyncio.run(_burst(url, list(range(20))))
    assert [r.json()["y"] for r in responses] == [2 * x for x in range(20)]
    assert scaling["generation"] == 1 and scaling["parallelism"]["work"] == 2
    (change,) = scaling["changes"]
    assert change["how"] == "rolled" and "stateful" in change["why"]
