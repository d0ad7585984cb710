"""``sage engine emulate`` as a real process: its OpenAI-compatible endpoints, vLLM
metrics, and the official openai client through ``sage gateway``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

CONFIG = {
    "profile": "cpu-2core-tiny-llama-minilm",
    "devices": [
        {
            "name": "gpu0",
            "engines": [
                {"id": "llm0", "kind": "llm", "model": "llama"},
                {"id": "emb0", "kind": "embedding", "model": "e5"},
            ],
        },
        {"name": "gpu1", "engines": [{"id": "llm1", "kind": "llm", "model": "llama"}]},
    ],
}


def _urls(info: dict[str, Any]) -> dict[str, str]:
    return {e["id"]: e["url"] for e in info["engines"]}


def test_ready_line_names_engines_devices_and_says_emulated(emulator: Any) -> None:
    info = emulator(CONFIG)
    assert info["emulated"] is True
    assert {(e["id"], e["device"]) for e in info["engines"]} == {
        ("llm0", "gpu0"),
        ("emb0", "gpu0"),
        ("llm1", "gpu1"),
    }
    models = httpx.get(_urls(info)["llm0"] + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["llama"]


def test_engines_answer_like_vllm_and_expose_its_metrics(emulator: Any) -> None:
    urls = _urls(emulator(CONFIG))
    client = openai.OpenAI(base_url=urls["llm0"] + "/v1", api_key="x")
    out = client.completions.create(model="llama", prompt="one two three", max_tokens=4)
    assert out.usage is not None and out.usage.completion_tokens == 4
    assert out.system_fingerprint == "sage-emulated"
    resp = httpx.post(urls["emb0"] + "/v1/completions", json={"model": "e5"})
    assert resp.status_code == 404  # an embedding engine serves no generation
    bad = httpx.post(
        urls["llm0"] + "/v1/completions", json={"model": "nope", "prompt": "x"}
    )
    assert bad.status_code == 404 and "does not exist" in bad.json()["error"]["message"]
    metrics = httpx.get(urls["llm0"] + "/metrics").text
    for name in (
        "num_requests_running",
        "num_requests_waiting",
        "gpu_cache_usage_perc",
    ):
        assert f"vllm:{name}{{" in metrics


def test_openai_client_through_the_gateway(emulator: Any, gateway: Any) -> None:
    info = emulator(CONFIG)
    engines = [
        {
            "id": e["id"],
            "url": e["url"],
            "kind": e["kind"],
            "model": e["model"],
            "device": e["device"],
        }
        for e in info["engines"]
    ]
    served = gateway(
        {"engines": engines, "policy": "interference-aware", "router": "kv-aware"}
    )
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="x")
    chat = client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.choices[0].message.content == " tok tok tok"
    chunks = list(
        client.chat.completions.create(
            model="llama",
            messages=[{"role": "user", "content": "hi there"}],
            max_tokens=5,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " tok" * 5
    emb = client.embeddings.create(model="e5", input=["a b", "c d e"])
    assert [len(d.embedding) for d in emb.data] == [384, 384]
    assert emb.data[0].embedding != emb.data[1].embedding
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="missing", input="x")
    listed = httpx.get(served.url + "/admin/engines").json()
    devices = {e["id"]: e["device"] for e in listed["engines"]}
    assert devices["emb0"] == "gpu0" and devices["llm1"] == "gpu1"


def test_fit_profile_writes_a_loadable_profile_naming_its_source(
    emulator: Any, tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from sage_plugins.emulator.fit import fit_cmd
    from sage_plugins.emulator.profile import load_profile

    urls = _urls(emulator(CONFIG))
    out = tmp_path / "fitted.json"
    result = CliRunner().invoke(
        fit_cmd,
        [
            "--llm-url",
            urls["llm1"],
            "--embedding-url",
            urls["emb0"],
            "--batch",
            "2",
            "--repeats",
            "1",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    profile = load_profile(str(out))
    assert urls["llm1"] in profile.source and urls["emb0"] in profile.source
    assert "error" in profile.source
    data = json.loads(out.read_text())
    assert set(data["fit_errors"]) == {"llm_ttft", "embedding"}
    # what the first token costs beyond a step is measured, never negative
    assert data["llm"]["request_overhead_ms"] >= 0
    # how much a step and a batch vary is measured, and is loadable as written
    assert 0 <= data["llm"]["step_cv"] <= 3 and 0 <= data["embedding"]["batch_cv"] <= 3
    assert profile.llm.step_cv == data["llm"]["step_cv"]
    # the emulator counts words x 1.3 tokens (rounded up): the fit reads it back
    assert 1.28 <= profile.tokens_per_word <= 1.4
    missing = CliRunner().invoke(fit_cmd, [str(out)])
    assert missing.exit_code != 0 and "--llm-url" in missing.output


def test_engine_sockets_send_without_nagle_delay() -> None:
    """Connections to an emulated engine have TCP_NODELAY: without it a keep-alive
    request's response waited ~40 ms for the client's delayed ACK, which every
    emulated latency then carried."""
    import socket

    from sage_plugins.emulator.emulate import _bind

    server = _bind("127.0.0.1", 0)
    server.setblocking(True)
    client = socket.create_connection(server.getsockname())
    try:
        conn, _ = server.accept()
        with conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        client.close()
        server.close()


def test_device_packing_gateway_keeps_a_device_whole_for_embeddings(
    emulator: Any, gateway: Any
) -> None:
    """Through the gateway, generations pack onto one LLM engine, and an embedding
    sent while they run goes to the device whose LLM engine is idle."""
    import concurrent.futures
    import time

    paired = [
        {
            "name": f"gpu{d}",
            "sharing": "timeslice",
            "engines": [
                {"id": f"llm{d}", "kind": "llm", "model": "llama"},
                {"id": f"emb{d}", "kind": "embedding", "model": "e5"},
            ],
        }
        for d in range(2)
    ]
    info = emulator({"profile": "h100-llama3-8b-e5-mistral-7b", "devices": paired})
    engines = [
        {k: e[k] for k in ("id", "url", "kind", "model", "device")}
        for e in info["engines"]
    ]
    served = gateway(
        {"engines": engines, "policy": "priority", "router": "device-packing"}
    )

    def complete(_: int) -> int:
        resp = httpx.post(
            served.url + "/v1/completions",
            json={"model": "llama", "prompt": "a b c", "max_tokens": 300},
            timeout=60,
        )
        return resp.status_code

    def state() -> dict[str, dict[str, Any]]:
        listed = httpx.get(served.url + "/admin/engines").json()["engines"]
        return {e["id"]: e for e in listed}

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(complete, i) for i in range(4)]
        deadline = time.monotonic() + 30
        while state()["llm0"]["inflight"] < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        emb = httpx.post(
            served.url + "/v1/embeddings", json={"model": "e5", "input": ["x y"]}
        )
        assert emb.status_code == 200
        during = state()
        assert [r.result() for r in runs] == [200] * 4
    assert during["llm0"]["inflight"] == 4 and during["llm1"]["inflight"] == 0
    assert (during["emb0"]["served"], during["emb1"]["served"]) == (0, 1)
    after = state()
    assert (after["llm0"]["served"], after["llm1"]["served"]) == (4, 0)
