"""The ``adaptive`` policy switches by observed load (with hysteresis, moving the
queue, recording why); ``cost-optimized`` holds embedding batches while their
requests have slack and releases them in time; both through a real gateway, whose
decision log records their decisions."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core.llm.classify import LLMRequest
from sage_core.llm.errors import ConfigError
from sage_core.llm.plane import make_policy


class ClockView:
    """A DispatchView with a settable clock and per-pool readiness."""

    def __init__(self, ready: set[str] | None = None) -> None:
        self.now = 0.0
        self.ready_pools = {"llm:m", "embedding:e"} if ready is None else ready
        self.busy: dict[str, int] = {}

    def ready(self, pool: str) -> bool:
        return pool in self.ready_pools

    def ready_apart(self, pool: str) -> bool:
        return self.ready(pool)

    def inflight(self, pool: str) -> int:
        return self.busy.get(pool, 0)

    def inflight_kind(self, engine_kind: str) -> int:
        return sum(n for p, n in self.busy.items() if p.startswith(engine_kind))

    def engines(self, pool: str) -> int:
        return 1


_seq = iter(range(1, 1_000_000))


def req(kind: str, at: float, slo_ms: float | None = None, size: int = 1) -> LLMRequest:
    model = "e" if kind == "embedding" else "m"
    body = {"model": model, "input": ["x"] * size} if kind == "embedding" else {}
    return LLMRequest(
        kind=kind,
        model=model,
        body=body,
        slo_ms=slo_ms,
        arrival=at,
        deadline=at + slo_ms / 1000 if slo_ms else math.inf,
        size=size,
        seq=next(_seq),
    )


@pytest.mark.parametrize("name", ["fifo", "priority", "slo-aware", "hybrid"])
def test_a_request_removed_and_pushed_again_is_served_once(name: str) -> None:
    """A policy switch and back moves a request out of a policy and into it again."""
    policy = make_policy(name)
    view = ClockView()
    a, b = req("chat", 0.0, slo_ms=5000), req("embedding", 0.0)
    for r in (a, b):
        policy.push(r)
    for r in (a, b):
        assert policy.remove(r)
        policy.push(r)
    assert policy.requests() == [a, b] and len(policy) == 2
    out = [r for batch in iter(lambda: policy.pop(view), None) for r in batch]
    assert sorted(r.seq for r in out) == [a.seq, b.seq]


# -- adaptive ------------------------------------------------------------------------


def late_window(policy: Any, view: ClockView, start: float) -> None:
    """A window in which every released chat request was past its deadline."""
    for i in range(4):
        view.now = start + i * 0.1
        policy.push(req("chat", view.now - 1.0, slo_ms=100))
        assert policy.pop(view) is not None


def test_adaptive_switches_to_slo_aware_after_confirmed_overload() -> None:
    policy = make_policy("adaptive", {"window_ms": 500, "confirm": 2})
    view = ClockView()
    late_window(policy, view, 0.0)
    late_window(policy, view, 0.5)  # closes window 1: overload seen once
    assert policy.describe()["active"]["policy"]["name"] == "priority"
    waiting = [req("chat", 1.0, slo_ms=5000), req("embedding", 1.0)]
    for r in waiting:
        policy.push(r)
    view.ready_pools = set()  # nothing can leave: the queue must move over intact
    view.now = 1.05
    assert policy.pop(view) is None  # closes window 2: overload confirmed
    described = policy.describe()
    assert described["active"] == {
        "regime": "overload",
        "policy": described["active"]["policy"],
    }
    assert described["active"]["policy"]["name"] == "slo-aware"
    assert policy.requests() == waiting and len(policy) == 2
    (event,) = policy.take_events()
    assert event["from"] == "priority" and event["to"] == "slo-aware"
    assert event["window"]["late_share"] == 1.0 and event["moved"] == 2
    assert policy.take_events() == []  # drained
    assert described["switches"][0]["regime"] == "overload"


def test_adaptive_sees_objectives_missed_in_the_engines() -> None:
    """Released on time but answered late (queued in the engine): overload too."""
    policy = make_policy("adaptive", {"window_ms": 500, "confirm": 1})
    view = ClockView()
    for i in range(6):
        view.now = i * 0.1
        r = req("embedding", view.now, slo_ms=150)
        policy.push(r)
        assert policy.pop(view) == [r]  # on time when it leaves
        policy.finished(r, "ok", view.now + 0.4)  # answered 250 ms past its deadline
    (event,) = policy.take_events()
    assert (event["to"], event["regime"]) == ("slo-aware", "overload")
    assert event["window"]["late_share"] == 1.0 and event["window"]["finished"] == 5


def test_adaptive_ignores_a_single_overloaded_window() -> None:
    policy = make_policy("adaptive", {"window_ms": 500, "confirm": 2})
    view = ClockView()
    late_window(policy, view, 0.0)
    view.now = 0.6  # window 1 closes as overload
    policy.push(req("chat", 0.6))
    policy.pop(view)
    view.now = 1.2  # window 2 was calm: the pending switch is dropped
    policy.pop(view)
    assert policy.describe()["active"]["regime"] == "light"
    assert policy.take_events() == []


def test_adaptive_batches_embeddings_while_they_queue_then_relaxes() -> None:
    policy = make_policy("adaptive", {"window_ms": 100, "confirm": 1, "batch_queue": 3})
    view = ClockView(ready={"llm:m"})  # embedding engines busy: requests queue
    for i in range(10):
        view.now = i * 0.03
        policy.push(req("embedding", view.now))
        policy.pop(view)
    assert policy.describe()["active"]["policy"]["name"] == "hybrid"
    view.ready_pools = {"llm:m", "embedding:e"}
    view.now = 0.5
    out = [r for batch in iter(lambda: policy.pop(view), None) for r in batch]
    assert len(out) == 10  # merged into batches by hybrid, none lost
    view.now = 0.7
    policy.pop(view)  # a calm window: back to releasing at once
    assert policy.describe()["active"]["policy"]["name"] == "priority"
    assert [e["to"] for e in policy.take_events()] == ["hybrid", "priority"]


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["chat", "embedding"]),
            st.floats(0, 0.2),  # time step
            st.booleans(),  # engines ready
            st.one_of(st.none(), st.floats(1, 500)),
        ),
        max_size=60,
    )
)
@settings(max_examples=60, deadline=None)
def test_adaptive_loses_and_repeats_nothing_across_switches(ops: list) -> None:
    policy = make_policy("adaptive", {"window_ms": 50, "confirm": 1, "batch_queue": 2})
    view = ClockView()
    pushed, out = [], []
    for kind, step, ready, slo in ops:
        view.now += step
        view.ready_pools = {"llm:m", "embedding:e"} if ready else set()
        r = req(kind, view.now - 0.1, slo_ms=slo)
        pushed.append(r.seq)
        policy.push(r)
        while (batch := policy.pop(view)) is not None:
            out += [x.seq for x in batch]
    view.ready_pools = {"llm:m", "embedding:e"}
    view.now += 100.0
    while (batch := policy.pop(view)) is not None:
        out += [x.seq for x in batch]
    assert sorted(out) == sorted(pushed) and len(policy) == 0


def test_adaptive_config_errors_are_named() -> None:
    for config in (
        {"policies": {"light": "nope"}},
        {"policies": {"heavy": "fifo"}},
        {"policies": {"light": "adaptive"}},
        {"window_ms": 0},
        {"policy_configs": {"mixed": {"max_batch": 0}}},
    ):
        with pytest.raises(ConfigError, match="adaptive"):
            make_policy("adaptive", config)


# -- cost-optimized ------------------------------------------------------------------


def test_cost_optimized_holds_a_batch_while_there_is_slack() -> None:
    policy = make_policy(
        "cost-optimized",
        {"max_wait_ms": 1000, "margin_ms": 10, "initial_batch_ms": 20},
    )
    view = ClockView()
    first = req("embedding", 0.0, slo_ms=200)
    policy.push(first)
    assert policy.pop(view) is None  # an idle engine does not start it: slack left
    # it waits half its slack: (200 - 20 predicted - 10 margin) / 2 = 85 ms
    assert policy.wake_after(0.0) == pytest.approx(0.085)
    view.now = 0.05
    second = req("embedding", 0.05, slo_ms=5000)
    policy.push(second)
    assert policy.pop(view) is None
    view.now = 0.086
    assert policy.pop(view) == [first, second]
    (event,) = policy.take_events()
    assert event["reason"] == "deadline" and event["inputs"] == 2
    assert event["held_ms"] == pytest.approx(86.0)


def test_cost_optimized_releases_full_batches_at_once_and_learns_their_cost() -> None:
    policy = make_policy("cost-optimized", {"max_batch": 4, "max_wait_ms": 1000})
    view = ClockView()
    batch = [req("embedding", 0.0, size=2), req("embedding", 0.0, size=2)]
    for r in batch:
        policy.push(r)
    assert policy.pop(view) == batch
    for n, seconds in ((1, 0.012), (4, 0.018), (8, 0.026)):
        policy.observe([req("embedding", 0.0, size=n)], seconds)
    assert policy.predict_s(16) == pytest.approx(0.010 + 0.002 * 16, rel=1e-6)
    learned = policy.describe()["learned"]
    assert learned["released_because"] == {"full": 1}
    assert learned["inputs_per_call"] == 4
    assert learned["fixed_s_saved"] == pytest.approx(0.010)  # two requests, one call


def test_cost_optimized_makes_fewer_engine_calls_than_hybrid() -> None:
    def calls(name: str) -> int:
        policy = make_policy(name, {"max_batch": 32, "max_wait_ms": 40})
        view = ClockView()
        n = 0
        for i in range(40):  # one request every 5 ms, 1 s objectives, idle engine
            view.now = i * 0.005
            policy.push(req("embedding", view.now, slo_ms=1000))
            while policy.pop(view) is not None:
                n += 1
        view.now = 10.0
        while policy.pop(view) is not None:
            n += 1
        return n

    assert calls("cost-optimized") <= 5 < calls("hybrid")


# -- through a gateway ----------------------------------------------------------------


def _log(path: Path, event: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r["event"] == event]


def test_a_gateway_logs_why_cost_optimized_batches_left(
    engine_double: Any, gateway: Any, tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    emb = engine_double("emb", kind="embedding")
    gw = gateway(
        {
            "engines": [emb.spec("e")],
            "policy": "cost-optimized",
            "policy_config": {"max_wait_ms": 300},
            "decision_log": str(log),
        }
    )

    async def run() -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            sent = [
                client.post(
                    "/v1/embeddings",
                    json={
                        "model": "emb",
                        "input": f"text {i}",
                        "slo_deadline_ms": 5000,
                    },
                )
                for i in range(5)
            ]
            for response in await asyncio.gather(*sent):
                assert response.status_code == 200
                assert len(response.json()["data"]) == 1

    asyncio.run(run())
    assert emb.state.batch_sizes == [5]  # one engine call for the five requests
    deadline = time.monotonic() + 10
    while not _log(log, "policy-event"):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    (event,) = _log(log, "policy-event")
    assert event["policy"] == "cost-optimized" and event["reason"] == "max-wait"
    assert event["requests"] == 5
    described = httpx.get(gw.url + "/admin/policy").json()
    assert described["learned"]["calls"] == 1
