"""Streamed generations of :class:`sage_core.llm.client.OpenAIClient`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from sage_core.backends import Generation
from sage_core.llm.client_errors import (
    EndpointTimeoutError,
    InferenceError,
    StreamError,
)
from sage_core.llm.sse import SSEDecoder, choice_text, opt_int, stream_event_json

if TYPE_CHECKING:
    from sage_core.llm.client import OpenAIClient


class TokenStream:
    """Async iterator over the text pieces of one streamed generation.

    Iterate it once; afterwards :attr:`generation` holds the whole answer with its
    time to first token and the arrival time of every piece::

        tokens = client.stream_chat(messages, model="tiny", max_tokens=32)
        async for piece in tokens:
            ...
        tokens.generation.ttft_s

    Raises (while iterating):
        StreamError: the server sent an error event or malformed data, or closed
            the stream before ``[DONE]``.
        EndpointTimeoutError: no data arrived within the client's read timeout.
    """

    def __init__(
        self, client: OpenAIClient, path: str, body: Mapping[str, Any], model: str
    ) -> None:
        self._client = client
        self._path = path
        self._body = {
            **body,
            "model": model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        self.model = model
        self.endpoint = f"{client.base_url}{path}"
        self.generation: Generation | None = None
        self._started = False

    def __aiter__(self) -> AsyncIterator[str]:
        if self._started:
            raise InferenceError(
                "a TokenStream can be iterated only once",
                endpoint=self.endpoint,
                model=self.model,
            )
        self._started = True
        return self._pieces()

    def _error(self, cls: type[InferenceError], message: str) -> InferenceError:
        return cls(message, endpoint=self.endpoint, model=self.model)

    async def _pieces(self) -> AsyncIterator[str]:
        start = time.perf_counter()
        resp = await self._client._open("POST", self._path, self.model, self._body)
        decoder = SSEDecoder()
        times: list[float] = []
        text: list[str] = []
        finish: str | None = None
        usage: Mapping[str, Any] | None = None
        served_model = self.model
        done = False
        try:
            async for chunk in resp.aiter_bytes():
                for event in decoder.feed(chunk):
                    if event.data == "[DONE]":
                        done = True
                        break
                    data = stream_event_json(event, self.endpoint, self.model)
                    served_model = str(data.get("model") or served_model)
                    usage = data.get("usage") or usage
                    for choice in data.get("choices") or ():
                        piece = choice_text(choice)
                        if piece:
                            times.append(time.perf_counter() - start)
                            text.append(piece)
                            yield piece
                        finish = choice.get("finish_reason") or finish
                if done:
                    break
        except httpx.TimeoutException as exc:
            raise self._error(
                EndpointTimeoutError,
                f"{self.endpoint} stopped streaming (read timeout after "
                f"{len(times)} pieces)",
            ) from exc
        except httpx.HTTPError as exc:
            raise self._error(
                StreamError,
                f"{self.endpoint} broke off the stream after {len(times)} pieces: "
                f"{exc!r}",
            ) from exc
        finally:
            await resp.aclose()
        if not done:
            raise self._error(
                StreamError,
                f"{self.endpoint} closed the stream after {len(times)} pieces "
                f"without [DONE]",
            )
        completion_tokens = len(times)
        prompt_tokens = None
        if usage:
            completion_tokens = int(usage.get("completion_tokens") or completion_tokens)
            prompt_tokens = opt_int(usage.get("prompt_tokens"))
        self.generation = Generation(
            text="".join(text),
            model=served_model,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.perf_counter() - start,
            ttft_s=times[0] if times else None,
            token_times_s=tuple(times),
            source=self.endpoint,
        )
