"""Async client for OpenAI-compatible servers: chat, completions, embeddings.

Works against vLLM's OpenAI server, llama.cpp's server, hosted APIs and SAGE's own
gateway. Built on ``httpx.AsyncClient``::

    async with OpenAIClient("http://127.0.0.1:8000/v1") as client:
        answer = await client.chat([{"role": "user", "content": "Hi"}], model="tiny",
                                   max_tokens=16, stream=True)
        answer.text, answer.ttft_s, answer.itl_s
        vectors = await client.embed(["a", "b"], model="minilm")

Behaviour callers rely on:

* **Retries** with exponential backoff and jitter on connection errors (refused, reset,
  connect timeout) and on 429/5xx answers, always *before the first byte* of a
  result: a stream that has started is never replayed. ``Retry-After`` is honoured up
  to ``max_backoff_s``.
* **Named errors** (all :class:`InferenceError`, a ``SageError``) that name the
  endpoint and model: :class:`EndpointUnreachableError`, :class:`EndpointTimeoutError`,
  :class:`UnknownModelError`, :class:`ContextTooLongError`,
  :class:`AuthenticationFailedError`, :class:`BadRequestError`,
  :class:`RateLimitedError`, :class:`ServerError`, :class:`StreamError`.
* **Streaming** over server-sent events with the time to first token and the arrival
  time of every later piece of text (:class:`sage_core.backends.Generation`).

Reusable pieces (the gateway uses them too): :class:`SSEDecoder` (incremental SSE
parsing of raw bytes, in ``sse.py``), :func:`error_from_response` (status + body ->
named error) and :func:`parse_error_body`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
import numpy as np

from sage_core.backends import Generation, Vectors, normalize_rows
from sage_core.llm.client_errors import (
    AuthenticationFailedError,
    BadRequestError,
    ContextTooLongError,
    EndpointTimeoutError,
    EndpointUnreachableError,
    InferenceError,
    RateLimitedError,
    ServerError,
    StreamError,
    UnknownModelError,
    error_from_response,
    parse_error_body,
)
from sage_core.llm.client_stream import TokenStream
from sage_core.llm.loop import BackgroundLoop
from sage_core.llm.sse import SSEDecoder, SSEEvent, parse_completion

__all__ = [
    "AuthenticationFailedError",
    "BackgroundLoop",
    "BadRequestError",
    "ContextTooLongError",
    "EndpointTimeoutError",
    "EndpointUnreachableError",
    "InferenceError",
    "OpenAIClient",
    "RateLimitedError",
    "SSEDecoder",
    "SSEEvent",
    "ServerError",
    "StreamError",
    "TokenStream",
    "UnknownModelError",
    "error_from_response",
    "parse_error_body",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: transport failures that happen before any byte of an answer: safe to retry
_RETRYABLE_TRANSPORT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.PoolTimeout,
)


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InferenceError(
            f"endpoint {url!r} is not an http(s) URL; give e.g. "
            f"http://127.0.0.1:8000/v1",
            endpoint=url,
        )
    return url


class OpenAIClient:
    """Async client of one OpenAI-compatible endpoint.

    Args:
        base_url: the API root including ``/v1`` (``http://host:8000/v1``).
        api_key: bearer token, if the server wants one.
        timeout_s: seconds to wait for any read (a token, or a whole non-streamed
            answer) before raising :class:`EndpointTimeoutError`.
        connect_timeout_s: seconds to wait for a connection.
        max_retries: extra attempts after a retryable failure before the first byte.
        backoff_s: first backoff; doubles per attempt, with +-50% jitter.
        max_backoff_s: cap of one backoff (and of an honoured ``Retry-After``).
        max_connections: connection pool size.
        headers: extra headers sent with every request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 3,
        backoff_s: float = 0.25,
        max_backoff_s: float = 8.0,
        max_connections: int = 64,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if max_retries < 0:
            raise InferenceError("max_retries must be >= 0", endpoint=base_url)
        self.base_url = _base_url(base_url)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        all_headers = {"Accept": "application/json", **(headers or {})}
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=all_headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
            ),
        )
        #: attempts made by the last request (1 = no retry); useful in tests/metrics
        self.last_attempts = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OpenAIClient:  # noqa: PYI034 - py3.10
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- transport ---------------------------------------------------------------

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff_s)
            except ValueError:
                pass
        base = min(self.backoff_s * (2 ** (attempt - 1)), self.max_backoff_s)
        return float(base * random.uniform(0.5, 1.5))

    async def _open(
        self, method: str, path: str, model: str | None, body: Any | None
    ) -> httpx.Response:
        """Send a request and return a 2xx response whose body is not read yet.

        Retries connection failures and 429/5xx answers; maps everything else.
        """
        endpoint = f"{self.base_url}{path}"
        attempt = 0
        while True:
            attempt += 1
            self.last_attempts = attempt
            request = self._http.build_request(method, path, json=body)
            try:
                resp = await self._http.send(request, stream=True)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                    if attempt <= self.max_retries:
                        await asyncio.sleep(self._delay(attempt, None))
                        continue
                    raise EndpointUnreachableError(
                        f"could not connect to {endpoint} within the connect timeout "
                        f"after {attempt} attempts; is the server running?",
                        endpoint=endpoint,
                        model=model,
                    ) from exc
                raise EndpointTimeoutError(
                    f"{endpoint} did not answer within the timeout "
                    f"({type(exc).__name__}); raise timeout_s or check the server",
                    endpoint=endpoint,
                    model=model,
                ) from exc
            except _RETRYABLE_TRANSPORT as exc:
                if attempt <= self.max_retries:
                    logger.debug("retrying %s after %r", endpoint, exc)
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                raise EndpointUnreachableError(
                    f"cannot reach {endpoint} after {attempt} attempts: {exc!r}; "
                    f"check that the server runs and the URL is right",
                    endpoint=endpoint,
                    model=model,
                ) from exc
            if resp.status_code < 400:
                return resp
            try:
                raw = await resp.aread()
            except httpx.HTTPError:
                raw = b""
            finally:
                await resp.aclose()
            retryable = resp.status_code == 429 or resp.status_code >= 500
            if retryable and attempt <= self.max_retries:
                logger.debug("retrying %s after HTTP %s", endpoint, resp.status_code)
                await asyncio.sleep(
                    self._delay(attempt, resp.headers.get("retry-after"))
                )
                continue
            raise error_from_response(
                resp.status_code,
                raw,
                endpoint=endpoint,
                model=model,
                retry_after=resp.headers.get("retry-after"),
                attempts=attempt,
            )

    async def _json(
        self, method: str, path: str, model: str | None, body: Any | None = None
    ) -> Any:
        resp = await self._open(method, path, model, body)
        endpoint = f"{self.base_url}{path}"
        try:
            raw = await resp.aread()
        except httpx.TimeoutException as exc:
            raise EndpointTimeoutError(
                f"{endpoint} stopped sending its answer (read timeout)",
                endpoint=endpoint,
                model=model,
            ) from exc
        except httpx.HTTPError as exc:
            raise StreamError(
                f"{endpoint} broke off its answer: {exc!r}",
                endpoint=endpoint,
                model=model,
            ) from exc
        finally:
            await resp.aclose()
        try:
            return json.loads(raw)
        except ValueError:
            raise StreamError(
                f"{endpoint} answered with invalid JSON: {raw[:200]!r}",
                endpoint=endpoint,
                model=model,
            ) from None

    # -- API ---------------------------------------------------------------------

    async def models(self) -> list[str]:
        """The model ids the server lists at ``GET /models``."""
        data = await self._json("GET", "/models", None)
        try:
            return [str(m["id"]) for m in data["data"]]
        except (KeyError, TypeError):
            raise StreamError(
                f"{self.base_url}/models answered without a model list: "
                f"{str(data)[:200]}",
                endpoint=f"{self.base_url}/models",
            ) from None

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str,
        stream: bool = False,
        **params: Any,
    ) -> Generation:
        """``POST /chat/completions``; ``params`` go into the body unchanged
        (``max_tokens``, ``temperature``, ``stop``, ``seed`` ...)."""
        body = {"model": model, "messages": list(messages), **params}
        return await self._generate("/chat/completions", body, model, stream)

    async def complete(
        self, prompt: str, *, model: str, stream: bool = False, **params: Any
    ) -> Generation:
        """``POST /completions`` for a raw prompt."""
        body = {"model": model, "prompt": prompt, **params}
        return await self._generate("/completions", body, model, stream)

    async def embed(self, texts: Sequence[str], *, model: str) -> Vectors:
        """``POST /embeddings``: unit-norm float32 rows in input order."""
        if isinstance(texts, str):
            raise InferenceError(
                "embed() takes a list of texts, got one string",
                endpoint=f"{self.base_url}/embeddings",
                model=model,
            )
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        data = await self._json(
            "POST", "/embeddings", model, {"model": model, "input": list(texts)}
        )
        try:
            rows = sorted(data["data"], key=lambda row: int(row["index"]))
            matrix = [row["embedding"] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise StreamError(
                f"{self.base_url}/embeddings answered without embeddings: "
                f"{str(data)[:200]}",
                endpoint=f"{self.base_url}/embeddings",
                model=model,
            ) from None
        if len(matrix) != len(texts):
            raise StreamError(
                f"{self.base_url}/embeddings returned {len(matrix)} vectors for "
                f"{len(texts)} texts",
                endpoint=f"{self.base_url}/embeddings",
                model=model,
            )
        return normalize_rows(matrix)

    def stream_chat(
        self, messages: Sequence[Mapping[str, Any]], *, model: str, **params: Any
    ) -> TokenStream:
        """A :class:`TokenStream` of a streamed chat completion."""
        body = {"messages": list(messages), **params}
        return TokenStream(self, "/chat/completions", body, model)

    def stream_completion(
        self, prompt: str, *, model: str, **params: Any
    ) -> TokenStream:
        """A :class:`TokenStream` of a streamed completion of ``prompt``."""
        return TokenStream(self, "/completions", {"prompt": prompt, **params}, model)

    async def _generate(
        self, path: str, body: dict[str, Any], model: str, stream: bool
    ) -> Generation:
        if stream:
            tokens = TokenStream(self, path, body, model)
            async for _ in tokens:
                pass
            assert tokens.generation is not None
            return tokens.generation
        start = time.perf_counter()
        data = await self._json("POST", path, model, body)
        latency = time.perf_counter() - start
        return parse_completion(data, model, latency, f"{self.base_url}{path}")
