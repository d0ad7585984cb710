"""Calls to engines: one JSON request, or a stream passed through byte for byte.

Errors are sorted by what the control plane can do about them: ``Retryable`` (the
engine failed before the first byte: connection refused, timeout, 5xx) lets it fail
over to another engine; :class:`EngineRejectedError` (a 4xx) goes back to the caller
unchanged. Once a stream has sent its first byte it is never retried: a failure after
that ends the stream with an OpenAI-shaped ``error`` event.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sage_core.llm.client_errors import parse_error_body
from sage_core.llm.errors import EngineRejectedError
from sage_core.llm.http1 import HTTPError, Pool, Response
from sage_core.llm.sse import SSEDecoder, choice_text

if TYPE_CHECKING:
    from sage_core.llm.registry import Engine

ROUTES = {
    "chat": "/v1/chat/completions",
    "completion": "/v1/completions",
    "embedding": "/v1/embeddings",
}


class Retryable(Exception):
    """The engine failed before answering; ``trip`` means it is certainly down
    (connection refused) and the breaker should open at once."""

    def __init__(self, message: str, *, trip: bool = False) -> None:
        super().__init__(message)
        self.trip = trip


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _headers(engine: Engine) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if engine.spec.api_key:
        headers["Authorization"] = f"Bearer {engine.spec.api_key}"
    return headers


def _error_message(payload: bytes) -> tuple[str, str | None]:
    """(message, param) of an engine's error body, in any common shape."""
    message, _, _ = parse_error_body(payload)
    try:
        error = json.loads(payload).get("error")
        param = error.get("param") if isinstance(error, dict) else None
    except (ValueError, AttributeError):
        param = None
    return message, None if param is None else str(param)


def _raise_for(status: int, payload: bytes) -> None:
    if status < 400:
        return
    message, param = _error_message(payload)
    if 400 <= status < 500 and status not in (408, 429):
        raise EngineRejectedError(status, message, param=param)
    raise Retryable(f"engine answered {status}: {message}")


def _translate(exc: HTTPError) -> Retryable:
    return Retryable(str(exc), trip=exc.connect)


def usage_of(data: Any) -> Usage:
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return Usage()
    return Usage(
        int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    )


class Dispatcher:
    """Sends requests to engines over keep-alive connection pools (one per engine).

    Args:
        timeout_s: longest wait for an answer head (non-streamed requests answer only
            when done) and, for streams, the longest gap between two chunks.
        connect_timeout_s: connection set-up bound (a dead engine fails fast).
    """

    def __init__(
        self, *, timeout_s: float = 300.0, connect_timeout_s: float = 2.0
    ) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.pools: dict[str, Pool] = {}

    def pool(self, engine: Engine) -> Pool:
        pool = self.pools.get(engine.spec.url)
        if pool is None:
            pool = Pool(engine.spec.url, connect_timeout_s=self.connect_timeout_s)
            self.pools[engine.spec.url] = pool
        return pool

    def forget(self, url: str) -> None:
        """Close the idle connections to an engine that was removed."""
        pool = self.pools.pop(url, None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()

    async def _send(self, engine: Engine, kind: str, body: dict[str, Any]) -> Response:
        try:
            return await self.pool(engine).request(
                "POST",
                ROUTES[kind],
                json.dumps(body).encode(),
                _headers(engine),
                timeout_s=self.timeout_s,
            )
        except HTTPError as exc:
            raise _translate(exc) from exc

    async def call(
        self, engine: Engine, kind: str, body: dict[str, Any]
    ) -> tuple[bytes, dict[str, Any]]:
        """POST one request; returns the raw JSON body and its decoded form.

        Raises:
            Retryable: failure before an answer (fail over).
            EngineRejectedError: the engine answered a 4xx.
        """
        resp = await self._send(engine, kind, body)
        try:
            payload = await resp.aread()
        except HTTPError as exc:
            raise _translate(exc) from exc
        _raise_for(resp.status_code, payload)
        try:
            data = json.loads(payload)
        except ValueError as exc:
            raise Retryable(f"engine answered invalid JSON: {exc}") from exc
        return payload, data

    async def open_stream(
        self, engine: Engine, kind: str, body: dict[str, Any]
    ) -> tuple[Response, AsyncIterator[bytes], bytes]:
        """Start a streamed request and read up to its first chunk.

        Returns the response, the iterator of the remaining chunks (``aclose`` both
        when done), and the first chunk. Raises like :meth:`call` until then.
        """
        resp = await self._send(engine, kind, body)
        if resp.status_code >= 400:
            try:
                payload = await resp.aread()
            except HTTPError as exc:
                raise _translate(exc) from exc
            _raise_for(resp.status_code, payload)
        chunks = resp.aiter_raw()
        try:
            first = b""
            while not first:
                first = await chunks.__anext__()
        except StopAsyncIteration:
            raise Retryable("engine closed the stream before the first byte") from None
        except HTTPError as exc:
            raise _translate(exc) from exc
        except BaseException:
            await resp.aclose()
            raise
        return resp, chunks, first


class StreamMeter:
    """Watches passing SSE bytes: token events (TTFT, inter-token gaps), usage.

    Args:
        on_first: called with the time of the first token event.
        on_gap: called with each inter-token gap in seconds.
    """

    def __init__(
        self, on_first: Callable[[float], None], on_gap: Callable[[float], None]
    ) -> None:
        self.on_first = on_first
        self.on_gap = on_gap
        self.decoder = SSEDecoder()
        self.last: float | None = None
        self.tokens = 0
        self.usage = Usage()
        self.error: str | None = None
        self.done = False

    def feed(self, chunk: bytes) -> None:
        for event in self.decoder.feed(chunk):
            self._data(event.data)

    def _data(self, data: str) -> None:
        if data == "[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if "error" in event:
            self.error = parse_error_body(event)[0]
        if event.get("usage"):
            self.usage = usage_of(event)
        for choice in event.get("choices") or ():
            if isinstance(choice, dict) and choice_text(choice):
                now = time.monotonic()
                if self.last is None:
                    self.on_first(now)
                else:
                    self.on_gap(now - self.last)
                self.last = now
                self.tokens += 1
                break


def error_event(message: str, code: str = "upstream_error") -> bytes:
    """An SSE event carrying an OpenAI-shaped error (ends a broken stream)."""
    body = {
        "error": {
            "message": message,
            "type": "server_error",
            "param": None,
            "code": code,
        }
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"
