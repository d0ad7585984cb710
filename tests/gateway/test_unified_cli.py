"""UnifiedInferenceClient (sync and async) and the engine admin commands."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from sage_core.cli.engine_admin import add_engine, list_engines, remove_engine
from sage_core.llm.errors import ModelNotFoundError, OverloadedError
from sage_core.llm.unified import UnifiedInferenceClient


def test_unified_client_sync_and_async(engine_double, gateway) -> None:
    llm, emb = engine_double("tiny"), engine_double("mini", "embedding")
    gw = gateway({"engines": [llm.spec("a"), emb.spec("e")]})
    with UnifiedInferenceClient(
        gw.url, priority="high", slo_deadline_ms=5000
    ) as client:
        assert (
            client.chat([{"role": "user", "content": "hi"}], max_tokens=3) == "t0 t1 t2"
        )
        assert client.generate("hi", max_tokens=2) == "t0 t1"
        vectors = client.embed(["a", "b", "c"])
        assert len(vectors) == 3 and vectors[0] != vectors[1]
        assert client.embed("a") == vectors[:1]
        with pytest.raises(ModelNotFoundError) as info:
            client.embed("a", model="nope")
        assert info.value.status == 404

    async def run() -> tuple[str, list[list[float]]]:
        async with UnifiedInferenceClient(gw.url) as client:
            return await asyncio.gather(
                client.achat([{"role": "user", "content": "x"}], max_tokens=1),
                client.aembed(["a"]),
            )

    reply, vectors_async = asyncio.run(run())
    assert reply == "t0" and vectors_async == vectors[:1]
    slo = gw.gateway.plane.metrics.snapshot()["slo"]
    assert slo["chat"]["2"]["met"] == 1  # header priority and deadline were used


def test_unified_client_raises_overloaded_with_retry_after(engine_double, gateway):
    llm = engine_double("tiny", token_delay_s=0.05)
    gw = gateway(
        {"engines": [llm.spec("a", max_inflight=1)], "queue_limits": {"chat": 1}}
    )

    async def run() -> list[object]:
        async with UnifiedInferenceClient(gw.url) as client:
            calls = [
                client.achat([{"role": "user", "content": "x"}], max_tokens=10)
                for _ in range(6)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(run())
    overloaded = [r for r in results if isinstance(r, OverloadedError)]
    assert overloaded and all(r.retry_after_s >= 1 for r in overloaded)


def test_engine_admin_edits_a_config_file(tmp_path) -> None:
    config = tmp_path / "gateway.yaml"
    runner = CliRunner()
    added = runner.invoke(
        add_engine,
        [
            "--url",
            "http://127.0.0.1:9001/v1",
            "--kind",
            "embedding",
            "--model",
            "mini",
            "--id",
            "emb",
            "--config",
            str(config),
        ],
    )
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["url"] == "http://127.0.0.1:9001"
    again = runner.invoke(
        add_engine,
        ["--url", "http://127.0.0.1:9001", "--id", "emb", "--config", str(config)],
    )
    assert again.exit_code != 0 and "already" in again.output
    listed = json.loads(runner.invoke(list_engines, ["--config", str(config)]).output)
    assert [e["id"] for e in listed] == ["emb"]
    assert runner.invoke(remove_engine, ["emb", "--config", str(config)]).exit_code == 0
    assert (
        json.loads(runner.invoke(list_engines, ["--config", str(config)]).output) == []
    )
    bad = runner.invoke(add_engine, ["--url", "localhost:1", "--config", str(config)])
    assert bad.exit_code != 0 and "http://host:port" in bad.output


def test_engine_admin_talks_to_a_running_gateway(engine_double, gateway) -> None:
    llm = engine_double("tiny")
    gw = gateway({})
    runner = CliRunner()
    added = runner.invoke(
        add_engine,
        ["--url", llm.url, "--model", "tiny", "--id", "a", "--gateway", gw.url],
    )
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["state"] == "healthy"
    listed = json.loads(runner.invoke(list_engines, ["--gateway", gw.url]).output)
    assert [(e["id"], e["state"]) for e in listed] == [("a", "healthy")]
    removed = runner.invoke(remove_engine, ["a", "--gateway", gw.url])
    assert removed.exit_code == 0 and json.loads(removed.output)["removed"]
    missing = runner.invoke(remove_engine, ["a", "--gateway", gw.url])
    assert missing.exit_code != 0 and "404" in missing.output


def test_pipeline_openai_client_can_point_at_the_gateway(engine_double, gateway):
    from sage_core.llm.client import OpenAIClient

    llm, emb = engine_double("tiny"), engine_double("mini", "embedding")
    gw = gateway({"engines": [llm.spec("a"), emb.spec("e")]})

    async def run() -> tuple:
        client = OpenAIClient(gw.url + "/v1", max_retries=0)
        try:
            plain = await client.chat(
                [{"role": "user", "content": "hi"}], model="tiny", max_tokens=4
            )
            streamed = await client.chat(
                [{"role": "user", "content": "hi"}],
                model="tiny",
                max_tokens=4,
                stream=True,
            )
            vectors = await client.embed(["a", "b"], model="mini")
            return plain, streamed, vectors
        finally:
            await client.aclose()

    plain, streamed, vectors = asyncio.run(run())
    assert plain.text == streamed.text == "t0 t1 t2 t3"
    assert streamed.ttft_s is not None and len(streamed.token_times_s) == 4
    assert vectors.shape == (2, 8)
