"""What the gateway reports matches what happened: /health while engines are down,
the X-Sage-Engine header on every engine answer, and per-engine served/retried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

CHAT = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 2,
}
FAST_HEALTH = {"interval_s": 0.05, "timeout_s": 1, "failures": 1, "cooldown_s": 60}


def _until(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_health_is_degraded_while_an_engine_is_down(engine_double, gateway) -> None:
    a, b = engine_double("tiny"), engine_double("tiny")
    emb = engine_double("mini", "embedding")
    gw = gateway(
        {"engines": [a.spec("a"), b.spec("b"), emb.spec("e")], "health": FAST_HEALTH}
    )
    health = httpx.get(gw.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["down_engines"] == []

    a.state.healthy = False
    _until(lambda: httpx.get(gw.url + "/health").json()["status"] != "ok", "a down")
    health = httpx.get(gw.url + "/health")
    report = health.json()
    assert health.status_code == 200  # every model still has a healthy engine
    assert report["status"] == "degraded"
    assert [e["id"] for e in report["down_engines"]] == ["a"]
    assert report["down_engines"][0]["state"] == "down"
    assert report["healthy_engines"] == ["b", "e"]
    assert report["unavailable_models"] == []

    emb.state.healthy = False  # the only engine of "mini"
    _until(lambda: httpx.get(gw.url + "/health").status_code == 503, "mini down")
    report = httpx.get(gw.url + "/health").json()
    assert report["status"] == "unavailable"
    assert report["unavailable_models"] == ["mini"]
    assert [e["id"] for e in report["down_engines"]] == ["a", "e"]


def test_every_engine_answer_names_its_engine(engine_double, gateway) -> None:
    a = engine_double("tiny")
    emb = engine_double("mini", "embedding", token_delay_s=0.05)
    gw = gateway(
        {
            "engines": [a.spec("a"), emb.spec("e", max_inflight=1)],
            "policy": "hybrid",
            "policy_config": {"max_batch": 8, "max_wait_ms": 20},
        }
    )
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        chat = client.post("/v1/chat/completions", json=CHAT)
        text = client.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
        stream = client.post(
            "/v1/completions", json={"model": "tiny", "prompt": "x", "stream": True}
        )
        one = client.post("/v1/embeddings", json={"model": "mini", "input": "a"})
        rejected = client.post(  # the engine's own 400, passed on
            "/v1/completions", json={"model": "tiny", "prompt": "x", "temperature": 9}
        )
        unknown = client.post("/v1/completions", json={"model": "x", "prompt": "x"})
    for resp in (chat, text, stream, one):
        assert resp.status_code == 200, resp.text
    assert [r.headers["x-sage-engine"] for r in (chat, text, stream, one)] == [
        "a",
        "a",
        "a",
        "e",
    ]
    assert rejected.status_code == 400 and rejected.headers["x-sage-engine"] == "a"
    assert "x-sage-engine" not in unknown.headers  # never reached an engine

    async def batched() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as ac:
            return await asyncio.gather(
                *(
                    ac.post(
                        "/v1/embeddings", json={"model": "mini", "input": [f"t{i}"]}
                    )
                    for i in range(6)
                )
            )

    answers = asyncio.run(batched())
    assert max(emb.state.batch_sizes) > 1  # some answers came from a shared call
    assert [r.headers["x-sage-engine"] for r in answers] == ["e"] * 6


def test_served_counts_completed_requests_and_retries_apart(
    engine_double, gateway
) -> None:
    a, b = engine_double("tiny"), engine_double("tiny")
    emb = engine_double("mini", "embedding", token_delay_s=0.05)
    gw = gateway(
        {
            "engines": [a.spec("a"), b.spec("b"), emb.spec("e", max_inflight=1)],
            "health": {"interval_s": 30, "failures": 1, "cooldown_s": 60},
            "router": "round-robin",
            "policy": "hybrid",
            "policy_config": {"max_batch": 16, "max_wait_ms": 20},
        }
    )
    a.stop()  # killed; the gateway finds out by failing a request on it

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as ac:
            chats = [ac.post("/v1/chat/completions", json=CHAT) for _ in range(8)]
            embeds = [
                ac.post("/v1/embeddings", json={"model": "mini", "input": [f"t{i}"]})
                for i in range(12)
            ]
            return [r.status_code for r in await asyncio.gather(*chats, *embeds)]

    assert asyncio.run(burst()) == [200] * 20
    engines = {
        e["id"]: e for e in httpx.get(gw.url + "/admin/engines").json()["engines"]
    }
    assert engines["a"]["served"] == 0 and engines["a"]["retried"] >= 1
    assert engines["b"]["served"] == 8 and engines["b"]["retried"] == 0
    assert engines["e"]["served"] == 12  # every request of each batch
    assert len(emb.state.batch_sizes) < 12
