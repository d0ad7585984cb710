"""OpenAIClient against served HTTP test doubles: happy paths, retries, named errors.

The happy paths run against the EngineDouble (tests/llm/engine_double.py); error
sequences (503 then 200, 429 with Retry-After, broken streams) against
``ScriptedServerDouble`` below, which answers each request with the next scripted
response. Real-vLLM checks of the same client live in tests/inference/.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sage_core.llm.client import (
    AuthenticationFailedError,
    BackgroundLoop,
    BadRequestError,
    ContextTooLongError,
    EndpointTimeoutError,
    EndpointUnreachableError,
    OpenAIClient,
    RateLimitedError,
    ServerError,
    StreamError,
    UnknownModelError,
    error_from_response,
)
from sage_core.llm.sse import SSEDecoder

MESSAGES = [{"role": "user", "content": "hello"}]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def call(url: str, fn: Callable[[OpenAIClient], Any], **kw: Any) -> Any:
    kw.setdefault("backoff_s", 0.01)
    async with OpenAIClient(url, **kw) as client:
        return await fn(client)


def chunk(piece: str) -> str:
    body = {"model": "m", "choices": [{"index": 0, "delta": {"content": piece}}]}
    return f"data: {json.dumps(body)}\n\n"


class ScriptedServerDouble:
    """Test double: an HTTP server answering request i with ``script[i]``.

    Each script entry is a Starlette Response, or a (sync or async) callable
    returning one. The last
    entry repeats. ``seen`` counts the requests that arrived.
    """

    def __init__(self, served_app: type, script: list[Any]) -> None:
        self.script = script
        self.seen = 0

        async def answer(request: Request) -> Response:
            entry = self.script[min(self.seen, len(self.script) - 1)]
            self.seen += 1
            if isinstance(entry, Response):
                return entry
            answer = entry()
            return await answer if inspect.isawaitable(answer) else answer

        app = Starlette(
            routes=[Route("/v1/{path:path}", answer, methods=["GET", "POST"])]
        )
        self.server = served_app(app)

    @property
    def url(self) -> str:
        return self.server.url + "/v1"


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Any]], ScriptedServerDouble]]:
    served_app = sys.modules["sage_tests_engine_double"].ServedApp
    started: list[ScriptedServerDouble] = []

    def start(script: list[Any]) -> ScriptedServerDouble:
        double = ScriptedServerDouble(served_app, script)
        double.server.start()
        started.append(double)
        return double

    try:
        yield start
    finally:
        for double in started:
            double.server.stop()


def ok_chat() -> Response:
    return JSONResponse(
        {
            "model": "m",
            "choices": [
                {"index": 0, "message": {"content": "fine"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1},
        }
    )


# -- happy paths against the EngineDouble ------------------------------------------


def test_chat_returns_text_tokens_and_latency(engine_double) -> None:
    engine = engine_double("m")
    answer = run(
        call(engine.url + "/v1", lambda c: c.chat(MESSAGES, model="m", max_tokens=5))
    )
    assert answer.text.split() == ["t0", "t1", "t2", "t3", "t4"]
    assert answer.completion_tokens == 5
    assert answer.prompt_tokens == 3
    assert answer.finish_reason == "length"
    assert answer.latency_s > 0
    assert answer.ttft_s is None and answer.token_times_s == ()
    assert answer.source == engine.url + "/v1/chat/completions"


def test_streamed_chat_records_ttft_and_inter_token_times(engine_double) -> None:
    engine = engine_double("m", token_delay_s=0.002)
    answer = run(
        call(
            engine.url + "/v1",
            lambda c: c.chat(MESSAGES, model="m", max_tokens=6, stream=True),
        )
    )
    assert answer.text.split() == [f"t{i}" for i in range(6)]
    assert answer.completion_tokens == 6  # from the usage chunk
    assert len(answer.token_times_s) == 6
    assert answer.ttft_s == answer.token_times_s[0]
    assert list(answer.token_times_s) == sorted(answer.token_times_s)
    assert len(answer.itl_s) == 5 and all(gap >= 0 for gap in answer.itl_s)
    assert answer.tbt_s is not None and answer.tbt_s >= 0
    assert answer.latency_s >= answer.token_times_s[-1]
    assert engine.state.bodies[-1]["stream_options"] == {"include_usage": True}


def test_token_stream_yields_pieces_then_the_generation(engine_double) -> None:
    engine = engine_double("m")

    async def body(client: OpenAIClient) -> Any:
        tokens = client.stream_completion("once upon", model="m", max_tokens=4)
        pieces = [piece async for piece in tokens]
        with pytest.raises(Exception, match="only once"):
            tokens.__aiter__()
        return pieces, tokens.generation

    pieces, generation = run(call(engine.url + "/v1", body))
    assert [piece.strip() for piece in pieces] == ["t0", "t1", "t2", "t3"]
    assert generation.text == "".join(pieces)
    assert generation.source.endswith("/v1/completions")


def test_embed_returns_unit_rows_in_input_order(engine_double) -> None:
    engine = engine_double("e", kind="embedding")
    texts = ["alpha", "beta", "gamma"]
    vectors = run(call(engine.url + "/v1", lambda c: c.embed(texts, model="e")))
    assert vectors.shape == (3, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    again = run(call(engine.url + "/v1", lambda c: c.embed(["beta"], model="e")))
    np.testing.assert_allclose(again[0], vectors[1], rtol=1e-6)
    assert run(call(engine.url + "/v1", lambda c: c.models())) == ["e"]


def test_unknown_model_names_endpoint_and_model(engine_double) -> None:
    engine = engine_double("m")
    with pytest.raises(UnknownModelError) as info:
        run(call(engine.url + "/v1", lambda c: c.chat(MESSAGES, model="nope")))
    assert info.value.status == 404 and info.value.model == "nope"
    assert engine.url in str(info.value) and "'nope'" in str(info.value)


# -- retries and named errors against scripted doubles -----------------------------


def test_5xx_before_the_first_byte_is_retried(scripted) -> None:
    server = scripted([JSONResponse({"error": "busy"}, 503)] * 2 + [ok_chat])

    async def body(client: OpenAIClient) -> Any:
        answer = await client.chat(MESSAGES, model="m")
        return answer, client.last_attempts

    answer, attempts = run(call(server.url, body))
    assert answer.text == "fine" and attempts == 3 and server.seen == 3


def test_429_honours_retry_after_then_gives_a_named_error(scripted) -> None:
    limited = JSONResponse(
        {"error": {"message": "slow down"}}, 429, headers={"Retry-After": "0"}
    )
    server = scripted([limited])
    with pytest.raises(RateLimitedError) as info:
        run(call(server.url, lambda c: c.chat(MESSAGES, model="m"), max_retries=2))
    assert server.seen == 3
    assert info.value.retry_after_s == 0
    assert "slow down" in str(info.value) and "3 attempts" in str(info.value)


def test_5xx_after_every_retry_is_a_server_error(scripted) -> None:
    server = scripted([JSONResponse({"message": "boom"}, 500)])
    with pytest.raises(ServerError, match="HTTP 500 after 2 attempts: boom"):
        run(call(server.url, lambda c: c.complete("x", model="m"), max_retries=1))
    assert server.seen == 2


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            400,
            {
                "object": "error",
                "message": "This model's maximum context length is 512 tokens. "
                "However, you requested 900 tokens.",
                "type": "BadRequestError",
                "code": 400,
            },
            ContextTooLongError,
        ),
        (401, {"error": {"message": "bad key"}}, AuthenticationFailedError),
        (422, {"detail": "max_tokens must be positive"}, BadRequestError),
    ],
)
def test_4xx_are_named_errors_and_never_retried(scripted, status, body, error) -> None:
    server = scripted([JSONResponse(body, status)])
    with pytest.raises(error) as info:
        run(call(server.url, lambda c: c.chat(MESSAGES, model="m")))
    assert server.seen == 1
    assert info.value.status == status and server.url in str(info.value)


def test_unreachable_endpoint_is_retried_then_named(free_port) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointUnreachableError) as info:
        run(call(url, lambda c: c.chat(MESSAGES, model="m"), max_retries=2))
    assert "3 attempts" in str(info.value) and url in str(info.value)
    assert info.value.model == "m"


def test_read_timeout_is_named(scripted) -> None:
    async def slow() -> Response:
        await asyncio.sleep(2)
        return ok_chat()

    server = scripted([slow])
    with pytest.raises(EndpointTimeoutError):
        run(call(server.url, lambda c: c.chat(MESSAGES, model="m"), timeout_s=0.2))
    assert server.seen == 1


def streamed(*parts: str) -> Callable[[], Response]:
    async def events() -> Any:
        for part in parts:
            yield part

    return lambda: StreamingResponse(events(), media_type="text/event-stream")


@pytest.mark.parametrize(
    ("parts", "match"),
    [
        ((chunk("a"), "data: {not json\n\n"), "malformed stream event"),
        ((chunk("a"), 'data: {"error": {"message": "engine died"}}\n\n'), "died"),
        ((chunk("a"), chunk("b")), "without \\[DONE\\]"),
    ],
)
def test_broken_streams_raise_and_are_not_replayed(scripted, parts, match) -> None:
    server = scripted([streamed(*parts)])
    with pytest.raises(StreamError, match=match):
        run(call(server.url, lambda c: c.chat(MESSAGES, model="m", stream=True)))
    assert server.seen == 1


def test_stream_without_usage_counts_pieces(scripted) -> None:
    server = scripted([streamed(chunk("a"), chunk("b"), "data: [DONE]\n\n")])
    answer = run(call(server.url, lambda c: c.chat(MESSAGES, model="m", stream=True)))
    assert answer.text == "ab" and answer.completion_tokens == 2
    assert answer.prompt_tokens is None


def test_error_mapping_of_404_without_model_hints_at_the_base_url() -> None:
    error = error_from_response(
        404, b'{"detail": "Not Found"}', endpoint="http://h/x/chat", model="m"
    )
    assert isinstance(error, BadRequestError) and "/v1" in str(error)
    error = error_from_response(
        404, b"The model `q` does not exist.", endpoint="http://h/v1/chat", model="q"
    )
    assert isinstance(error, UnknownModelError)


def test_background_loop_runs_coroutines_for_sync_callers(engine_double) -> None:
    engine = engine_double("m")
    loop = BackgroundLoop()
    client = OpenAIClient(engine.url + "/v1")
    try:
        answer = loop.run(client.complete("x", model="m", max_tokens=2))
        assert answer.completion_tokens == 2
        with pytest.raises(UnknownModelError):
            loop.run(client.complete("x", model="other"))
    finally:
        loop.run(client.aclose())
        loop.close()
    with pytest.raises(Exception, match="closed"):
        loop.run(asyncio.sleep(0))


# -- SSE decoding ------------------------------------------------------------------

event_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.lists(event_text, min_size=1, max_size=3), max_size=6),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_sse_decoder_is_independent_of_chunking(events, newline, cuts) -> None:
    """Any split of the byte stream (even inside a UTF-8 sequence or a CRLF) gives
    the same events; multi-line data is joined with newlines; comments are ignored."""
    wire = ""
    for lines in events:
        wire += ": keep-alive" + newline
        wire += "".join(f"data: {line}{newline}" for line in lines) + newline
    raw = wire.encode()
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    decoder = SSEDecoder()
    got = [e.data for piece in pieces for e in decoder.feed(piece)] + [
        e.data for e in decoder.flush()
    ]
    assert got == ["\n".join(lines) for lines in events]


def test_sse_decoder_fields_and_unterminated_last_event() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"event: error\nid: 7\ndata:x\n\ndata: tail")
    assert [(e.event, e.id, e.data) for e in events] == [("error", "7", "x")]
    assert [e.data for e in decoder.flush()] == ["tail"]
