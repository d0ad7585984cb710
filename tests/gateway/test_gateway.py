"""The gateway over EngineDouble engines: routes, errors, failover, cancellation,
policies and priority ordering, all through real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

CHAT = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 4,
}


def test_openai_routes_answer(engine_double, gateway) -> None:
    a, b = engine_double("tiny"), engine_double("tiny")
    emb = engine_double("mini", "embedding")
    gw = gateway({"engines": [a.spec("a"), b.spec("b"), emb.spec("emb")]})
    with httpx.Client(base_url=gw.url) as client:
        models = client.get("/v1/models").json()["data"]
        assert {(m["id"], m["kind"]) for m in models} == {
            ("tiny", "llm"),
            ("mini", "embedding"),
        }
        chat = client.post("/v1/chat/completions", json=CHAT)
        assert chat.status_code == 200
        assert chat.json()["choices"][0]["message"]["content"] == "t0 t1 t2 t3"
        assert chat.headers["x-request-id"].startswith("req-")
        text = client.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert text.json()["object"] == "text_completion"
        one = client.post("/v1/embeddings", json={"model": "mini", "input": "a"})
        many = client.post(
            "/v1/embeddings", json={"model": "mini", "input": ["a", "b"]}
        )
        assert len(one.json()["data"]) == 1 and len(many.json()["data"]) == 2
        assert many.json()["data"][1]["index"] == 1
        metrics = client.get("/metrics").text
        assert (
            'sage_llm_requests_total{cls="chat",priority="1",status="ok"} 1.0'
            in metrics
        )
        assert "sage_llm_engine_healthy" in metrics
        admin = client.get("/admin/metrics").json()
        assert admin["completed_requests"] == 4
        assert set(admin["routing"]) <= {"a", "b", "emb"}


def test_streaming_passes_events_through_and_measures_ttft(engine_double, gateway):
    a = engine_double("tiny", token_delay_s=0.005)
    gw = gateway({"engines": [a.spec("a")]})
    body = {
        **CHAT,
        "stream": True,
        "max_tokens": 5,
        "stream_options": {"include_usage": True},
    }
    with httpx.Client(base_url=gw.url) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = [line for line in resp.iter_lines() if line.startswith("data:")]
        assert events[-1] == "data: [DONE]"
        pieces = [json.loads(e[5:]) for e in events[:-1]]
        text = "".join(
            p["choices"][0]["delta"]["content"] for p in pieces if p["choices"]
        )
        assert text == "t0 t1 t2 t3 t4"
        admin = client.get("/admin/metrics").json()
    assert admin["ttft_ms"]["chat"]["count"] == 1
    assert admin["itl_ms"]["chat"]["count"] == 4


def test_errors_are_openai_shaped(engine_double, gateway) -> None:
    a = engine_double("tiny")
    gw = gateway({"engines": [a.spec("a")], "max_body_bytes": 2048})
    with httpx.Client(base_url=gw.url) as client:
        cases = [
            (client.post("/v1/chat/completions", content=b"{nope"), 400, None),
            (
                client.post("/v1/chat/completions", json={"model": "tiny"}),
                400,
                "messages",
            ),
            (
                client.post("/v1/chat/completions", json={**CHAT, "model": "x"}),
                404,
                "model",
            ),
            (
                client.post("/v1/embeddings", json={"model": "tiny", "input": "a"}),
                400,
                "model",
            ),
            (
                client.post(
                    "/v1/completions", json={"model": "tiny", "prompt": "x" * 4096}
                ),
                413,
                None,
            ),
            (client.get("/v1/nothing"), 404, None),
            # the engine's own 400 is passed on with its field
            (
                client.post(
                    "/v1/completions",
                    json={"model": "tiny", "prompt": "x", "temperature": 9},
                ),
                400,
                "temperature",
            ),
        ]
        for resp, status, param in cases:
            assert resp.status_code == status, resp.text
            error = resp.json()["error"]
            assert error["message"] and error["type"]
            assert error["param"] == param


def test_api_keys_and_rate_limits(engine_double, gateway) -> None:
    a = engine_double("tiny")
    gw = gateway(
        {
            "engines": [a.spec("a")],
            "api_keys": ["k1", "k2"],
            "rate_limit": {"requests_per_s": 0.1, "burst": 2},
        }
    )
    with httpx.Client(base_url=gw.url) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 401
        bad = client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer x"}
        )
        assert (
            bad.status_code == 401
            and bad.json()["error"]["type"] == "authentication_error"
        )
        k1 = {"Authorization": "Bearer k1"}
        assert client.get("/v1/models", headers=k1).status_code == 200
        for _ in range(2):  # the burst
            ok = client.post("/v1/chat/completions", json=CHAT, headers=k1)
            assert ok.status_code == 200
        limited = client.post("/v1/chat/completions", json=CHAT, headers=k1)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        k2 = {"Authorization": "Bearer k2"}
        assert (
            client.post("/v1/chat/completions", json=CHAT, headers=k2).status_code
            == 200
        )
        assert client.get("/health").status_code == 200  # health stays open


async def _burst(url: str, n: int, body: dict, **headers: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=body, headers=headers)
                for _ in range(n)
            )
        )


def test_full_queue_answers_429_and_recovers(engine_double, gateway) -> None:
    a = engine_double("tiny", token_delay_s=0.01)
    spec = a.spec("a", max_inflight=1)
    gw = gateway({"engines": [spec], "queue_limits": {"chat": 3}})
    statuses = [r.status_code for r in asyncio.run(_burst(gw.url, 12, CHAT))]
    assert statuses.count(200) >= 4 and statuses.count(429) >= 1
    assert set(statuses) <= {200, 429}
    assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT).status_code == 200


def test_no_healthy_engine_is_503(engine_double, gateway) -> None:
    a = engine_double("tiny")
    gw = gateway({"engines": [a.spec("a")], "health": {"interval_s": 0.1}})
    a.stop()
    resp = httpx.post(gw.url + "/v1/chat/completions", json=CHAT)
    assert resp.status_code in (502, 503)
    deadline = time.monotonic() + 5
    while (
        resp := httpx.post(gw.url + "/v1/chat/completions", json=CHAT)
    ).status_code != 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert resp.json()["error"]["code"] == "no_healthy_engine"
    assert httpx.get(gw.url + "/health").status_code == 503


def test_failover_before_first_byte_and_recovery(engine_double, gateway) -> None:
    a, b = engine_double("tiny"), engine_double("tiny")
    gw = gateway(
        {
            "engines": [a.spec("a"), b.spec("b")],
            "health": {"interval_s": 0.1, "cooldown_s": 0.3},
            "router": "least-load",
        }
    )
    port = a.port
    a.stop()  # killed: the gateway has not noticed yet
    statuses = [r.status_code for r in asyncio.run(_burst(gw.url, 8, CHAT))]
    assert statuses == [200] * 8  # every request failed over to b
    stream = httpx.post(
        gw.url + "/v1/completions",
        json={"model": "tiny", "prompt": "x", "stream": True},
    )
    assert stream.status_code == 200 and stream.text.endswith("data: [DONE]\n\n")
    engines = {
        e["id"]: e for e in httpx.get(gw.url + "/admin/engines").json()["engines"]
    }
    assert engines["a"]["state"] == "down"
    a.port = port
    a.start()  # restarted on the same address: health checks bring it back
    deadline = time.monotonic() + 10
    while (
        httpx.get(gw.url + "/admin/engines").json()["engines"][0]["state"] != "healthy"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    asyncio.run(_burst(gw.url, 8, CHAT))
    assert a.state.completed > 0


def test_client_disconnect_cancels_the_engine_request(engine_double, gateway) -> None:
    a = engine_double("tiny", token_delay_s=0.05)
    gw = gateway({"engines": [a.spec("a")]})
    body = {**CHAT, "stream": True, "max_tokens": 60}
    with (
        httpx.Client(base_url=gw.url) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        next(resp.iter_lines())
    deadline = time.monotonic() + 5
    while a.state.cancelled < 1:
        assert time.monotonic() < deadline, "engine kept generating"
        time.sleep(0.02)
    with pytest.raises(httpx.ReadTimeout):  # non-streamed: same on disconnect
        httpx.post(
            gw.url + "/v1/chat/completions",
            json={**CHAT, "max_tokens": 60},
            timeout=0.5,
        )
    deadline = time.monotonic() + 5
    while a.state.cancelled < 2:
        assert time.monotonic() < deadline, "engine kept generating"
        time.sleep(0.02)
    while a.state.active:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_priority_order_is_observable_and_policy_switches(engine_double, gateway):
    a = engine_double("tiny", token_delay_s=0.02)
    gw = gateway({"engines": [a.spec("a", max_inflight=1)], "policy": "fifo"})

    def tagged(tag: str, max_tokens: int) -> dict:
        return {
            **CHAT,
            "messages": [{"role": "user", "content": tag}],
            "max_tokens": max_tokens,
        }

    async def run() -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            blocker = asyncio.ensure_future(
                client.post(
                    "/v1/chat/completions",
                    json=tagged("blocker", 20),
                )
            )
            await asyncio.sleep(0.1)  # the blocker holds the only slot
            tasks = []
            for i, prio in enumerate([0, 0, 9, 5]):
                headers = {"x-request-priority": str(prio)}
                tasks.append(
                    asyncio.ensure_future(
                        client.post(
                            "/v1/chat/completions",
                            json=tagged(f"p{prio}-{i}", 2),
                            headers=headers,
                        )
                    )
                )
                await asyncio.sleep(0.02)
            await asyncio.gather(blocker, *tasks)

    asyncio.run(run())
    assert a.state.order == ["blocker", "p0-0", "p0-1", "p9-2", "p5-3"]  # fifo
    switched = httpx.put(gw.url + "/admin/policy", json={"policy": "priority"})
    assert switched.status_code == 200 and switched.json()["name"] == "priority"
    a.state.order.clear()
    asyncio.run(run())
    assert a.state.order == ["blocker", "p9-2", "p5-3", "p0-0", "p0-1"]
    legacy = httpx.post(gw.url + "/admin/set_policy", json={"policy": "slo-aware"})
    assert httpx.get(gw.url + "/admin/policy").json()["name"] == "slo-aware"
    assert legacy.status_code == 200
    bad = httpx.put(gw.url + "/admin/policy", json={"policy": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "policy"


def test_hybrid_batches_embedding_requests(engine_double, gateway) -> None:
    emb = engine_double("mini", "embedding", token_delay_s=0.05)
    gw = gateway(
        {
            "engines": [emb.spec("emb", max_inflight=1)],
            "policy": "hybrid",
            "policy_config": {"max_batch": 16, "max_wait_ms": 20},
        }
    )

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/embeddings", json={"model": "mini", "input": [f"t{i}"]}
                    )
                    for i in range(12)
                )
            )

    answers = asyncio.run(run())
    assert all(r.status_code == 200 for r in answers)
    from sage_tests_engine_double import vector

    for i, resp in enumerate(answers):
        data = resp.json()["data"]
        assert len(data) == 1 and data[0]["embedding"] == vector(json.dumps(f"t{i}"))
    assert max(emb.state.batch_sizes) > 1  # later requests shared engine calls
    assert sum(emb.state.batch_sizes) == 12


def test_engines_are_added_drained_and_removed_at_runtime(engine_double, gateway):
    a = engine_double("tiny", token_delay_s=0.02)
    b = engine_double("tiny")
    gw = gateway({"engines": [a.spec("a")]})
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        added = client.post("/admin/engines", json=b.spec("b"))
        assert added.status_code == 201 and added.json()["state"] == "healthy"
        assert client.post("/admin/engines", json=b.spec("b")).status_code == 409
        assert client.post("/admin/engines", json={"url": "ftp://x"}).status_code == 400

        async def drain_during_requests() -> list[int]:
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as ac:
                reqs = [
                    asyncio.ensure_future(
                        ac.post("/v1/chat/completions", json={**CHAT, "max_tokens": 20})
                    )
                    for _ in range(4)
                ]
                await asyncio.sleep(0.1)
                removed = await ac.delete("/admin/engines/a")
                assert removed.status_code == 200
                return [r.status_code for r in await asyncio.gather(*reqs)]

        assert asyncio.run(drain_during_requests()) == [200] * 4
        ids = [e["id"] for e in client.get("/admin/engines").json()["engines"]]
        assert ids == ["b"]
        assert client.delete("/admin/engines/a").status_code == 404


def test_session_affinity_keeps_a_session_on_one_engine(engine_double, gateway):
    a, b = engine_double("tiny"), engine_double("tiny")
    gw = gateway({"engines": [a.spec("a"), b.spec("b")], "router": "session-affinity"})
    with httpx.Client(base_url=gw.url) as client:
        for session in ("alice", "bob", "carol", "dave"):
            before = (len(a.state.bodies), len(b.state.bodies))
            for _ in range(3):
                resp = client.post(
                    "/v1/chat/completions", json=CHAT, headers={"X-Session-Id": session}
                )
                assert resp.status_code == 200
            grew = (len(a.state.bodies) - before[0], len(b.state.bodies) - before[1])
            assert sorted(grew) == [0, 3]  # all three on the same engine
        routing = client.get("/admin/metrics").json()["routing"]
    assert sum(routing.values()) == 12
