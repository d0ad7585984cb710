"""The README's path: index SAGE's docs, serve examples/pipelines/rag.yaml, ask it
with the official ``openai`` client (hash embedder + extractive backend: offline)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from sage_core import LocalEnvironment, PipelineServer
from sage_core.graph import load_spec

openai = pytest.importorskip("openai")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"


@pytest.fixture(scope="module")
def rag_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("sage-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("SAGE_HOME", str(home))
    try:
        from sage_core.cli import cli

        done = CliRunner().invoke(cli, ["run", str(EXAMPLES / "rag-index.yaml")])
        assert done.exit_code == 0, done.output
        spec = load_spec(EXAMPLES / "rag.yaml")
        env = LocalEnvironment(spec.graph.name)
        env.graph = spec.graph
        with PipelineServer(env).serve_in_thread() as url:
            yield url
    finally:
        mp.undo()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_openai_client_gets_answers_with_sources(rag_url):
    client = _client(rag_url)
    assert [m.id for m in client.models.list()] == ["rag"]
    reply = client.chat.completions.create(
        model="rag",
        messages=[{"role": "user", "content": "How are plugins discovered?"}],
    )
    answer = reply.choices[0].message.content
    assert answer and "[" in answer  # extractive: quoted sentences with [n]
    sources = reply.model_extra["sources"]
    assert len(sources) == 4 and all(s["id"] for s in sources)


def test_openai_client_streams_the_answer(rag_url):
    client = _client(rag_url)
    question = [{"role": "user", "content": "What is an operator contract?"}]
    whole = client.chat.completions.create(model="rag", messages=question)
    stream = client.chat.completions.create(model="rag", messages=question, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["sources"]


def test_unknown_model_is_a_404_the_client_understands(rag_url):
    client = _client(rag_url)
    with pytest.raises(openai.NotFoundError, match="rag"):
        client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "hi"}]
        )


def test_the_pipeline_route_returns_the_whole_item(rag_url):
    r = httpx.post(f"{rag_url}/v1/pipelines/rag", json={"query": "What is SAGE?"})
    item = r.json()
    assert r.status_code == 200 and item["query"] == "What is SAGE?"
    assert item["answer"] and len(item["contexts"]) == 4
