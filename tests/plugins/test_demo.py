"""``sage demo`` with the hash embedder against an OpenAI-compatible test double
(the real MiniLM + vLLM run is in tests/inference/test_rag_real.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sage_core.cli import cli


@pytest.fixture
def sage_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SAGE_HOME", str(tmp_path))
    return tmp_path


def test_demo_answers_with_sources_and_stage_table(sage_home, engine_double) -> None:
    engine = engine_double("real-llm")
    result = CliRunner().invoke(
        cli,
        [
            "demo",
            "--embedder",
            "hash",
            "--llm-url",
            engine.url + "/v1",
            "--max-tokens",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("\nQ: ") == 16 and out.count("\nA: ") == 16
    assert "[1] " in out and "score" in out
    for stage in ("embed", "retrieve", "refine", "prompt", "generate"):
        assert f"\n  {stage}" in out
    assert "queue-wait ms" in out and "NOT meaningful" not in out
    assert (
        sage_home / "data" / "collections" / "sage-demo" / "collection.json"
    ).exists()


def test_demo_json_output_and_own_questions(sage_home, engine_double, tmp_path) -> None:
    engine = engine_double("m")
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"query": "What is a replica?"}\n')
    result = CliRunner().invoke(
        cli,
        [
            "demo",
            "--embedder",
            "hash",
            "--llm-url",
            engine.url + "/v1",
            "--json",
            "--questions",
            str(questions),
            "--no-stream",
            "--top-k",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["summary"]["questions"] == 1
    assert payload["summary"]["meaningful_answers"] is True
    [answer] = payload["answers"]
    assert len(answer["sources"]) == 2 and answer["generation"]["ttft_s"] is None
    assert payload["stages"]["generate"]["items_out"] == 1


def test_demo_names_unreachable_servers_and_unknown_models(
    sage_home, engine_double, free_port
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = CliRunner().invoke(cli, ["demo", "--embedder", "hash", "--llm-url", url])
    assert result.exit_code == 1 and "cannot reach" in result.output
    engine = engine_double("m")
    result = CliRunner().invoke(
        cli,
        [
            "demo",
            "--embedder",
            "hash",
            "--llm-url",
            engine.url + "/v1",
            "--model",
            "other",
        ],
    )
    assert result.exit_code == 1
    assert "does not serve model 'other'; it serves m" in result.output
