"""A gateway records its dispatch decisions when asked, and ``sage explain
--dispatch-log`` replays them under another request policy: a real gateway over an
engine test double, with one slot, so requests queue."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from sage_core.cli import cli
from sage_core.diagnosis import DiagnosisError
from sage_core.diagnosis.dispatch import read_log, replay_dispatch, simulate

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
PRIORITIES = [0, 0, 9, 5]


def _events(path: Path, event: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in lines if r["event"] == event]


def _wait_done(path: Path, n: int) -> None:
    """Wait (10 s at most) until the log records ``n`` requests done."""
    deadline = time.monotonic() + 10
    while len(_events(path, "done")) < n:
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)


@pytest.fixture
def fifo_log(engine_double: Any, gateway: Any, tmp_path: Path) -> Path:
    """The decision log of a FIFO gateway serving a long request, then four short
    ones of priorities 0, 0, 9, 5 that queue behind it."""
    log = tmp_path / "decisions.jsonl"
    a = engine_double("tiny", token_delay_s=0.02)
    gw = gateway(
        {
            "engines": [a.spec("a", max_inflight=1)],
            "policy": "fifo",
            "decision_log": str(log),
        }
    )

    def tagged(tag: str, max_tokens: int) -> dict[str, Any]:
        return {
            **CHAT,
            "messages": [{"role": "user", "content": tag}],
            "max_tokens": max_tokens,
        }

    async def run() -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            first = asyncio.ensure_future(
                client.post("/v1/chat/completions", json=tagged("secret-blocker", 20))
            )
            await asyncio.sleep(0.1)
            rest = []
            for i, prio in enumerate(PRIORITIES):
                rest.append(
                    asyncio.ensure_future(
                        client.post(
                            "/v1/chat/completions",
                            json=tagged(f"secret-{i}", 2),
                            headers={"x-request-priority": str(prio)},
                        )
                    )
                )
                await asyncio.sleep(0.02)
            for response in await asyncio.gather(first, *rest):
                assert response.status_code == 200

    asyncio.run(run())
    _wait_done(log, 5)
    return log


def test_the_log_holds_decisions_and_no_prompts(fifo_log: Path) -> None:
    (start,) = _events(fifo_log, "start")
    assert start["policy"] == "fifo"
    assert [(e["id"], e["max_inflight"]) for e in start["engines"]] == [("a", 1)]
    dispatched = _events(fifo_log, "dispatch")
    assert [len(d["requests"]) for d in dispatched] == [1] * 5
    assert [d["requests"][0]["priority"] for d in dispatched[1:]] == PRIORITIES
    assert all(d["status"] == "ok" for d in _events(fifo_log, "done"))
    assert "secret" not in fifo_log.read_text()


def test_replaying_the_recorded_policy_repeats_its_decisions(fifo_log: Path) -> None:
    log = read_log(fifo_log)
    again = simulate(log, "fifo")
    assert [d[2] for d in again.decisions] == [d[2] for d in log.decisions]
    assert all(d[1] == "a" for d in again.decisions)


def test_replay_under_priority_serves_the_urgent_request_first(fifo_log: Path) -> None:
    out = replay_dispatch(fifo_log, "priority")
    assert (out["recorded_policy"], out["policy"], out["requests"]) == (
        "fifo",
        "priority",
        5,
    )
    log = read_log(fifo_log)
    prio = {r.id: r.priority for r in log.requests.values()}
    replayed = [prio[d["replayed"]["requests"][0]] for d in out["decisions"]]
    assert replayed[1:] == [9, 5, 0, 0]
    assert [d["changed"] for d in out["decisions"]] == [False, True, True, True, True]
    chat = out["classes"]["chat"]
    assert chat["recorded"]["requests"] == 5
    # the replay of fifo itself stays close to what was measured; priority's effect
    # is read against it
    assert set(chat) == {"recorded", "replayed_recorded_policy", "replayed"}
    p9 = out["priorities"]["chat p9"]
    assert p9["replayed"]["wait_p50_ms"] < p9["recorded"]["wait_p50_ms"]
    urgent = next(r for r in log.requests.values() if r.priority == 9)
    sim = simulate(log, "priority")
    assert sim.dispatched[urgent.id] < urgent.dispatched


@pytest.mark.parametrize("policy", ["cost-optimized", "adaptive"])
def test_the_policies_that_decide_more_replay_every_request(
    fifo_log: Path, policy: str
) -> None:
    """Policies with decisions of their own (batch holds, switches) replay too: at
    this light load adaptive stays on priority, and chat is never held."""
    out = replay_dispatch(fifo_log, policy)
    assert (out["policy"], out["requests"]) == (policy, 5)
    log = read_log(fifo_log)
    prio = {r.id: r.priority for r in log.requests.values()}
    replayed = [prio[d["replayed"]["requests"][0]] for d in out["decisions"]]
    # cost-optimized orders generations by deadline (none here: arrival order)
    assert replayed[1:] == ([9, 5, 0, 0] if policy == "adaptive" else [0, 0, 9, 5])


def test_sage_explain_replays_a_dispatch_log(fifo_log: Path) -> None:
    result = CliRunner().invoke(
        cli, ["explain", "--dispatch-log", str(fifo_log), "--replay", "priority"]
    )
    assert result.exit_code == 0, result.output
    assert "fifo -> priority" in result.output
    assert "4 of 5 dispatch decisions differ" in result.output
    as_json = CliRunner().invoke(
        cli,
        ["explain", "--dispatch-log", str(fifo_log), "--replay", "priority", "--json"],
    )
    assert json.loads(as_json.stdout)["policy"] == "priority"
    check = CliRunner().invoke(cli, ["explain", "--dispatch-log", str(fifo_log)])
    assert "fifo -> fifo" in check.output
    assert "0 of 5 dispatch decisions differ" in check.output


def test_bad_logs_and_policies_get_named_errors(tmp_path: Path, fifo_log: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"event": "start", "policy": "fifo"}\nnot json\n')
    with pytest.raises(DiagnosisError, match=r"broken.jsonl:2: not JSON"):
        read_log(broken)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"event": "done", "t": 1, "id": "x", "status": "ok"}\n')
    with pytest.raises(DiagnosisError, match="no start record"):
        read_log(empty)
    with pytest.raises(DiagnosisError, match="cannot read decision log"):
        read_log(tmp_path / "missing.jsonl")
    with pytest.raises(DiagnosisError, match="cannot replay under 'nope'"):
        replay_dispatch(fifo_log, "nope")
    both = CliRunner().invoke(
        cli, ["explain", "job-1", "--dispatch-log", str(fifo_log)]
    )
    assert both.exit_code == 2 and "not both" in both.output
    neither = CliRunner().invoke(cli, ["explain"])
    assert neither.exit_code == 2 and "missing JOB" in neither.output
    bad = CliRunner().invoke(cli, ["explain", "--dispatch-log", str(broken)])
    assert bad.exit_code == 1 and "not JSON" in bad.output


def test_a_retried_request_counts_with_its_last_dispatch(
    engine_double: Any, gateway: Any, tmp_path: Path
) -> None:
    log = tmp_path / "retry.jsonl"
    bad, good = engine_double("tiny"), engine_double("tiny")
    bad.state.fail_status = 500
    gw = gateway(
        {
            "engines": [bad.spec("bad"), good.spec("good")],
            "policy": "fifo",
            "router": "round-robin",
            "decision_log": str(log),
        }
    )
    for _ in range(2):
        response = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert response.status_code == 200
    _wait_done(log, 2)
    attempts = _events(log, "dispatch")
    assert "bad" in {d["engine"] for d in attempts}  # one request failed there first
    out = replay_dispatch(log, "fifo")
    assert out["requests"] == 2
    served = [d["recorded"] for d in out["decisions"] if d["recorded"]]
    assert [d["engine"] for d in served] == ["good", "good"]


def test_a_policy_switch_at_run_time_is_logged_and_reported(
    engine_double: Any, gateway: Any, tmp_path: Path
) -> None:
    log = tmp_path / "switch.jsonl"
    a = engine_double("tiny")
    gw = gateway({"engines": [a.spec("a")], "policy": "fifo", "decision_log": str(log)})
    assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT).status_code == 200
    switched = httpx.put(gw.url + "/admin/policy", json={"policy": "priority"})
    assert switched.status_code == 200
    assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT).status_code == 200
    _wait_done(log, 2)
    (switch,) = _events(log, "policy")
    assert switch["policy"] == "priority"
    out = replay_dispatch(log, "slo-aware")
    assert [s["policy"] for s in out["policy_switches"]] == ["priority"]
    text = CliRunner().invoke(cli, ["explain", "--dispatch-log", str(log)])
    assert "switched to priority" in text.output


def test_replay_packs_generations_as_the_default_router_did(
    engine_double: Any, gateway: Any, tmp_path: Path
) -> None:
    """Engines paired on two devices: the default router (device-packing) sends
    concurrent generations to one engine, and the replay decides the same."""
    log = tmp_path / "packed.jsonl"
    a, b = engine_double("tiny", token_delay_s=0.02), engine_double("tiny")
    e0, e1 = (
        engine_double("emb", kind="embedding"),
        engine_double("emb", kind="embedding"),
    )
    gw = gateway(
        {
            "engines": [
                a.spec("a", device="d0"),
                e0.spec("e0", device="d0"),
                b.spec("b", device="d1"),
                e1.spec("e1", device="d1"),
            ],
            "policy": "fifo",
            "decision_log": str(log),
        }
    )

    async def run() -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            sent = []
            for _ in range(3):
                body = {**CHAT, "max_tokens": 10}
                sent.append(
                    asyncio.ensure_future(
                        client.post("/v1/chat/completions", json=body)
                    )
                )
                await asyncio.sleep(0.02)
            for response in await asyncio.gather(*sent):
                assert response.status_code == 200

    asyncio.run(run())
    _wait_done(log, 3)
    (start,) = _events(log, "start")
    assert start["routers"]["llm"] == "device-packing"
    recorded = [d["engine"] for d in _events(log, "dispatch")]
    assert recorded == ["a", "a", "a"]
    again = simulate(read_log(log), "fifo")
    assert [d[1] for d in again.decisions] == recorded
