"""``stream: true`` chat completions of a served pipeline as OpenAI SSE chunks.

The first chunk carries the assistant role; then each piece of text the pipeline's
``generate`` stage produces for the request is one ``delta`` as it is generated
(backends that stream; with the others the whole answer is one delta at the end,
and whatever the final answer has beyond the streamed text is sent then); the last
chunk has ``finish_reason: "stop"`` and the answer's ``sources``; then ``[DONE]``.
An error after the stream has started (an operator failed on the request, its
deadline passed) is sent as an OpenAI error event, which OpenAI clients raise.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from sage_core.llm.errors import GatewayError
from sage_core.serve.hub import Outcome


class ChatChunks:
    """Builds the SSE events of one streamed chat completion."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def chunk(self, delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    @staticmethod
    def error(exc: GatewayError) -> bytes:
        return f"data: {json.dumps(exc.body())}\n\n".encode()


async def stream_chat(
    chunks: ChatChunks,
    future: asyncio.Future[Outcome],
    tokens: asyncio.Queue[str] | None,
    answer: Callable[[Outcome], tuple[str, list[dict[str, Any]]]],
    *,
    budget: float | None,
    expired: Callable[[], GatewayError],
    cancel: Callable[[], None],
) -> AsyncIterator[bytes]:
    """The events of one request: pieces from ``tokens`` while ``future`` is
    pending, then the rest of the answer (``answer(outcome)`` gives its text and
    sources, or raises the request's error) and the end. ``budget``: seconds until
    ``expired()`` is sent instead; ``cancel()`` runs when the client leaves early."""
    loop = asyncio.get_running_loop()
    end = None if budget is None else loop.time() + budget
    sent: list[str] = []
    try:
        yield chunks.chunk({"role": "assistant", "content": ""}, None)
        while not future.done():
            if tokens is None:
                waiting: set[asyncio.Future[Any]] = {future}
            else:
                waiting = {future, asyncio.ensure_future(tokens.get())}
            left = None if end is None else max(0.0, end - loop.time())
            done, _ = await asyncio.wait(
                waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for w in waiting - {future}:
                if w.done() and not w.cancelled():
                    sent.append(w.result())
                    yield chunks.chunk({"content": sent[-1]}, None)
                else:
                    w.cancel()
            if not done:
                yield chunks.error(expired())
                return
        while tokens is not None and not tokens.empty():  # queued before the outcome
            sent.append(tokens.get_nowait())
            yield chunks.chunk({"content": sent[-1]}, None)
        try:
            text, sources = answer(future.result())
        except GatewayError as exc:
            yield chunks.error(exc)
            return
        streamed = "".join(sent)
        rest = text[len(streamed) :] if text.startswith(streamed) else ""
        if rest:
            yield chunks.chunk({"content": rest}, None)
        yield chunks.chunk({}, "stop", sources=sources)
        yield b"data: [DONE]\n\n"
    finally:
        if not future.done():
            cancel()
