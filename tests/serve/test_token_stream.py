"""Token streaming of a served chat pipeline: the ``generate`` stage's tokens reach
the official ``openai`` client while the engine (the streaming OpenAI test double
of tests/llm/engine_double.py) is still generating."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core import LocalEnvironment, PipelineServer
from sage_core.graph import load_spec
from sage_core.serve import RequestHub
from sage_core.serve.tokens import TokenSink

openai = pytest.importorskip("openai")

TOKENS = 20


def _chat_spec(base_url: str) -> dict:
    return {
        "name": "chat",
        "operators": [
            {"name": "questions", "use": "range", "config": {"stop": 1}},
            {"name": "prompt", "use": "prompt", "inputs": ["questions"]},
            {
                "name": "generate",
                "use": "generate",
                "config": {
                    "backend": "openai",
                    "backend_config": {"base_url": base_url, "model": "tiny"},
                    "max_tokens": TOKENS,
                },
                "inputs": ["prompt"],
            },
            {"name": "answers", "use": "print", "inputs": ["generate"]},
        ],
    }


@pytest.fixture
def served_chat(engine_double):
    engine = engine_double("tiny", token_delay_s=0.05)
    spec = load_spec(_chat_spec(f"{engine.url}/v1"))
    env = LocalEnvironment(spec.graph.name)
    env.graph = spec.graph
    with PipelineServer(env).serve_in_thread() as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        yield engine, client


def test_tokens_reach_the_client_while_the_engine_generates(served_chat):
    engine, client = served_chat
    question = [{"role": "user", "content": "Count for me"}]
    stream = client.chat.completions.create(
        model="chat", messages=question, stream=True
    )
    pieces, finished_at_first_piece = [], None
    for chunk in stream:
        piece = chunk.choices[0].delta.content
        if piece:
            if finished_at_first_piece is None:
                finished_at_first_piece = engine.state.completed
            pieces.append(piece)
        last = chunk
    expected = " ".join(f"t{i}" for i in range(TOKENS))
    assert "".join(pieces) == expected
    assert len(pieces) == TOKENS  # one delta per generated token
    assert finished_at_first_piece == 0  # the engine was still generating
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["sources"] == []  # no retrieval in this pipeline
    assert engine.state.bodies[-1]["stream"] is True
    whole = client.chat.completions.create(model="chat", messages=question)
    assert whole.choices[0].message.content == expected
    assert engine.state.bodies[-1].get("stream") in (None, False)


def test_a_failure_after_the_stream_started_reaches_the_client(served_chat):
    engine, client = served_chat
    engine.state.fail_status = 400
    question = [{"role": "user", "content": "Count for me"}]
    stream = client.chat.completions.create(
        model="chat", messages=question, stream=True
    )
    with pytest.raises(openai.APIError, match="generate"):
        list(stream)
    engine.state.fail_status = None
    again = client.chat.completions.create(model="chat", messages=question)
    assert again.choices[0].message.content.startswith("t0 t1")


@given(
    text=st.text(min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=8),
    replay_after=st.integers(0, 8),
)
def test_a_retried_generation_never_sends_text_twice(text, cuts, replay_after):
    """An operator retried after a failure elsewhere in its batch streams its text
    again from the start: the request still receives the answer exactly once."""
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]

    async def run() -> str:
        hub = RequestHub("t")
        ((rid, _),) = hub.submit([{"query": "q"}], stream=True)
        first = TokenSink(hub, rid)
        for piece in pieces[:replay_after]:
            first(piece)
        retry = TokenSink(hub, rid)
        for piece in pieces:
            retry(piece)
        await asyncio.sleep(0)  # the pieces are queued by call_soon_threadsafe
        queue = hub.tokens(rid)
        assert queue is not None
        out = []
        while not queue.empty():
            out.append(queue.get_nowait())
        return "".join(out)

    assert asyncio.run(run()) == text
