"""OpenAIClient against a real vLLM OpenAI server serving the tiny local model.

Random weights give meaningless text: these tests check token counts, streaming,
timing fields, determinism and the named errors, never content.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from sage_core.llm.client import (
    ContextTooLongError,
    EndpointUnreachableError,
    OpenAIClient,
    UnknownModelError,
)
from sage_plugins.engines.vllm_server import EngineStartError, VLLMServer

pytestmark = [pytest.mark.inference, pytest.mark.slow]

MESSAGES = [{"role": "user", "content": "Say something about dataflows."}]


def params(n: int) -> dict[str, Any]:
    return {"max_tokens": n, "temperature": 0.0, "ignore_eos": True}


def run(server: VLLMServer, fn: Any) -> Any:
    async def body() -> Any:
        async with OpenAIClient(server.api_url, max_retries=1) as client:
            return await fn(client)

    return asyncio.run(body())


def test_models_and_exact_token_counts(vllm_server: VLLMServer) -> None:
    assert run(vllm_server, lambda c: c.models()) == ["tiny"]
    answer = run(vllm_server, lambda c: c.chat(MESSAGES, model="tiny", **params(12)))
    assert answer.completion_tokens == 12 and answer.finish_reason == "length"
    assert answer.prompt_tokens and answer.prompt_tokens > 5
    assert answer.model == "tiny" and answer.latency_s > 0
    assert answer.ttft_s is None


def test_streaming_matches_non_streaming_and_records_timing(
    vllm_server: VLLMServer,
) -> None:
    async def both(client: OpenAIClient) -> Any:
        plain = await client.complete("The pipeline", model="tiny", **params(16))
        streamed = await client.complete(
            "The pipeline", model="tiny", stream=True, **params(16)
        )
        return plain, streamed

    plain, streamed = run(vllm_server, both)
    assert streamed.text == plain.text  # greedy decoding is deterministic
    assert streamed.completion_tokens == 16
    assert 1 <= len(streamed.token_times_s) <= 16
    assert streamed.ttft_s == streamed.token_times_s[0] > 0
    assert list(streamed.token_times_s) == sorted(streamed.token_times_s)
    assert streamed.latency_s >= streamed.token_times_s[-1]
    assert streamed.tbt_s is not None and streamed.tbt_s >= 0


def test_chat_stream_pieces_and_concurrent_requests(vllm_server: VLLMServer) -> None:
    async def body(client: OpenAIClient) -> Any:
        tokens = client.stream_chat(MESSAGES, model="tiny", **params(8))
        pieces = [piece async for piece in tokens]
        many = await asyncio.gather(
            *[
                client.chat(
                    [{"role": "user", "content": f"question {i}"}],
                    model="tiny",
                    stream=True,
                    **params(10),
                )
                for i in range(8)
            ]
        )
        return pieces, tokens.generation, many

    pieces, generation, many = run(vllm_server, body)
    assert "".join(pieces) == generation.text and generation.completion_tokens == 8
    assert [g.completion_tokens for g in many] == [10] * 8
    assert all(g.ttft_s is not None for g in many)


def test_unknown_model_and_context_too_long_are_named(vllm_server: VLLMServer) -> None:
    with pytest.raises(UnknownModelError) as info:
        run(vllm_server, lambda c: c.chat(MESSAGES, model="gpt-9", max_tokens=4))
    assert info.value.endpoint.startswith(vllm_server.api_url)
    assert "gpt-9" in str(info.value)
    long_prompt = "word " * 2000
    with pytest.raises(ContextTooLongError, match="context"):
        run(vllm_server, lambda c: c.complete(long_prompt, model="tiny", max_tokens=4))


def test_bad_model_directory_fails_fast_with_the_log(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    server = VLLMServer(tmp_path, log_path=tmp_path / "log.txt", startup_timeout_s=300)
    with pytest.raises(EngineStartError, match="exited with code"):
        server.start()
    assert server.proc is not None and server.proc.poll() is not None


def test_cli_start_vllm_serves_and_stops_its_whole_process_group(
    tiny_model: Path, tmp_path: Path, sage_cmd: list[str], free_port: Any
) -> None:
    port = free_port()
    args = ["engine", "start", "vllm", "--model", str(tiny_model), "--port", str(port)]
    proc = subprocess.Popen(
        [*sage_cmd, *args, "--log-file", str(tmp_path / "vllm.log")],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once /health answers
        info = json.loads(line)
        assert info["url"] == f"http://127.0.0.1:{port}/v1"
        assert info["model"] == tiny_model.name
        server_pid = info["pid"]
        assert psutil.pid_exists(server_pid)
        group = [p.pid for p in psutil.Process(server_pid).children(recursive=True)]
        reply = httpx.post(
            info["url"] + "/completions",
            json={"model": tiny_model.name, "prompt": "x", "max_tokens": 3},
            timeout=60,
        )
        assert reply.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 30
        alive = [pid for pid in [server_pid, *group] if psutil.pid_exists(pid)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [
                pid
                for pid in alive
                if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            ]
        assert alive == []
        with pytest.raises(EndpointUnreachableError):
            asyncio.run(_models(info["url"]))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


async def _models(url: str) -> list[str]:
    async with OpenAIClient(url, max_retries=0) as client:
        return await client.models()
