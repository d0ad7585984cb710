"""The ``openai`` backend: any OpenAI-compatible server over HTTP.

vLLM's OpenAI server, llama.cpp's server, a hosted API or SAGE's gateway. Generation
requests of one ``generate`` call run concurrently (up to ``max_concurrency``) on a
background event loop, so a batch of prompts keeps a continuous-batching engine busy;
``embed`` splits long lists into requests of ``batch_size`` texts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from sage_core.backends import (
    BackendError,
    EmbeddingBackend,
    Generation,
    GenerationBackend,
    GenerationRequest,
    Vectors,
)
from sage_core.llm.client import OpenAIClient
from sage_core.llm.loop import BackgroundLoop

T = TypeVar("T")


class OpenAIBackend(EmbeddingBackend, GenerationBackend):
    """Client of one OpenAI-compatible endpoint and model.

    Args:
        base_url: API root including ``/v1``.
        model: model id to call (an LLM for ``generate``, an embedding model for
            ``embed``).
        api_key: bearer token, if needed.
        timeout_s: read timeout per request.
        max_retries: retries before the first byte (connection errors, 429, 5xx).
        max_concurrency: requests of one ``generate`` call in flight at once.
        batch_size: texts per ``/embeddings`` request.
        gpu: GPUs a stage using it declares (0: the engine runs elsewhere).
    """

    capabilities: ClassVar[tuple[str, ...]] = ("embed", "generate", "chat")

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        max_concurrency: int = 32,
        batch_size: int = 128,
        gpu: float = 0.0,
    ) -> None:
        if not model:
            raise BackendError("the openai backend needs model= (the served model id)")
        if max_concurrency < 1 or batch_size < 1:
            raise BackendError("max_concurrency and batch_size must be >= 1")
        self.model = model
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.batch_size = batch_size
        self._gpu = float(gpu)
        self._loop = BackgroundLoop(name="sage-openai-backend")
        self._client = OpenAIClient(
            base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries
        )
        self._dim: int | None = None
        self._closed = False

    @property
    def gpu(self) -> float:
        return self._gpu

    @classmethod
    def engine_for(cls, config: Mapping[str, Any]) -> str | None:
        url = config.get("base_url")
        return str(url).rstrip("/") if url else None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url}

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise BackendError(f"the openai backend for {self.base_url} is closed")
        return self._loop.run(coro)

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the backend's loop from any other loop."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop.loop)
        return await asyncio.wrap_future(future)

    # -- generation ------------------------------------------------------------------

    async def _one(self, request: GenerationRequest) -> Generation:
        params: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            **request.extra,
        }
        if request.stop:
            params["stop"] = list(request.stop)
        if request.seed is not None:
            params["seed"] = request.seed
        if request.stream and request.on_token is not None:
            tokens = (
                self._client.stream_chat(request.messages, model=self.model, **params)
                if request.messages is not None
                else self._client.stream_completion(
                    request.prompt or "", model=self.model, **params
                )
            )
            async for piece in tokens:
                request.on_token(piece)
            assert tokens.generation is not None
            return tokens.generation
        if request.messages is not None:
            return await self._client.chat(
                request.messages, model=self.model, stream=request.stream, **params
            )
        assert request.prompt is not None
        return await self._client.complete(
            request.prompt, model=self.model, stream=request.stream, **params
        )

    async def _many(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        gate = asyncio.Semaphore(self.max_concurrency)

        async def limited(request: GenerationRequest) -> Generation:
            async with gate:
                return await self._one(request)

        return list(await asyncio.gather(*(limited(r) for r in requests)))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        return self._run(self._many(requests))

    async def agenerate(
        self, requests: Sequence[GenerationRequest]
    ) -> list[Generation]:
        return await self._on_loop(self._many(requests))

    # -- embeddings ------------------------------------------------------------------

    async def _embed(self, texts: Sequence[str]) -> Vectors:
        parts = [
            self._client.embed(texts[i : i + self.batch_size], model=self.model)
            for i in range(0, len(texts), self.batch_size)
        ]
        matrices = await asyncio.gather(*parts)
        out = np.concatenate(matrices, axis=0)
        self._dim = int(out.shape[1])
        return out

    def embed(self, texts: Sequence[str]) -> Vectors:
        if isinstance(texts, str):
            raise BackendError("embed() takes a list of texts, got one string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._run(self._embed(list(texts)))

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return self.embed(texts)
        return await self._on_loop(self._embed(list(texts)))

    @property
    def dim(self) -> int:
        """Vector length; asks the server once (embedding one probe text)."""
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._client.aclose())
        finally:
            self._loop.close()
