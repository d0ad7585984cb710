"""``UnifiedInferenceClient``: chat, generate and embed through a SAGE gateway.

One object for Python users, synchronous (``chat``, ``generate``, ``embed``) and
asynchronous (``achat``, ``agenerate``, ``aembed``). Models default to the gateway's
first LLM / embedding model. Errors come back as the control plane's named errors
(``OverloadedError`` with ``retry_after_s``, ``ModelNotFoundError``, ...)::

    from sage_core.llm.unified import UnifiedInferenceClient

    with UnifiedInferenceClient.create() as client:      # $SAGE_GATEWAY_URL
        reply = client.chat([{"role": "user", "content": "Hello!"}])
        vectors = client.embed(["text1", "text2"])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import httpx

from sage_core.common.settings import DEFAULT_GATEWAY_PORT
from sage_core.llm.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    NoHealthyEngineError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    UpstreamError,
)

_BY_STATUS: dict[int, type[GatewayError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    502: UpstreamError,
    503: NoHealthyEngineError,
}


def _raise_for(resp: httpx.Response) -> Any:
    if resp.status_code < 400:
        return resp.json()
    try:
        error = resp.json()["error"]
        message, param = str(error["message"]), error.get("param")
    except (ValueError, KeyError, TypeError):
        message, param = resp.text[:500], None
    if resp.status_code == 429:
        retry = resp.headers.get("retry-after", "1")
        raise OverloadedError(
            message, retry_after_s=int(retry) if retry.isdigit() else 1
        )
    if resp.status_code == 404 and param == "model":
        raise ModelNotFoundError(message=message)
    cls = _BY_STATUS.get(resp.status_code, GatewayError)
    exc = cls(message, param=param)
    exc.status = resp.status_code
    raise exc


class UnifiedInferenceClient:
    """Client of a SAGE gateway (or any OpenAI-compatible server).

    Args:
        base_url: gateway URL without ``/v1``.
        api_key: bearer token, if the gateway has keys.
        llm_model: default model of ``chat``/``generate``.
        embedding_model: default model of ``embed``.
        priority: ``X-Request-Priority`` sent with every request (0..9 or a name).
        slo_deadline_ms: ``X-SLO-Deadline-Ms`` sent with every request.
        timeout_s: per-request timeout.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        llm_model: str | None = None,
        embedding_model: str | None = None,
        priority: int | str | None = None,
        slo_deadline_ms: float | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.headers: dict[str, str] = {}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        if priority is not None:
            self.headers["X-Request-Priority"] = str(priority)
        if slo_deadline_ms is not None:
            self.headers["X-SLO-Deadline-Ms"] = f"{slo_deadline_ms:g}"
        self.models_by_kind: dict[str, str] = {}
        if llm_model:
            self.models_by_kind["llm"] = llm_model
        if embedding_model:
            self.models_by_kind["embedding"] = embedding_model
        self.timeout_s = timeout_s
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None

    @classmethod
    def create(cls, **options: Any) -> UnifiedInferenceClient:
        """A client of ``$SAGE_GATEWAY_URL`` (default ``http://127.0.0.1:8889``)
        with ``$SAGE_API_KEY``; keyword options as for the constructor."""
        base_url = options.pop(
            "base_url",
            os.environ.get(
                "SAGE_GATEWAY_URL", f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}"
            ),
        )
        options.setdefault("api_key", os.environ.get("SAGE_API_KEY"))
        return cls(base_url, **options)

    # -- plumbing -------------------------------------------------------------------
    @property
    def sync(self) -> httpx.Client:
        if self._sync is None:
            self._sync = httpx.Client(
                base_url=self.base_url, headers=self.headers, timeout=self.timeout_s
            )
        return self._sync

    @property
    def aio(self) -> httpx.AsyncClient:
        if self._async is None:
            self._async = httpx.AsyncClient(
                base_url=self.base_url, headers=self.headers, timeout=self.timeout_s
            )
        return self._async

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self.close()

    def __enter__(self) -> UnifiedInferenceClient:  # noqa: PYI034 - py3.10
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> UnifiedInferenceClient:  # noqa: PYI034
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _pick(self, kind: str, listing: list[dict[str, Any]]) -> str:
        for model in listing:
            model_kind = model.get("kind", "llm")
            self.models_by_kind.setdefault(model_kind, str(model["id"]))
        if kind not in self.models_by_kind:
            raise NotFoundError(
                f"the gateway at {self.base_url} serves no {kind} model; pass "
                f"{'llm_model' if kind == 'llm' else 'embedding_model'}=..."
            )
        return self.models_by_kind[kind]

    # -- synchronous API -------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """The gateway's models (``id``, ``kind``, ...)."""
        return list(_raise_for(self.sync.get("/v1/models"))["data"])

    def _model(self, kind: str, model: str | None) -> str:
        return model or self.models_by_kind.get(kind) or self._pick(kind, self.models())

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        model: str | None = None,
        **params: Any,
    ) -> str:
        """The assistant's reply to ``messages`` (OpenAI parameters pass through)."""
        body = {
            "model": self._model("llm", model),
            "messages": list(messages),
            **params,
        }
        data = _raise_for(self.sync.post("/v1/chat/completions", json=body))
        return str(data["choices"][0]["message"]["content"] or "")

    def generate(self, prompt: str, *, model: str | None = None, **params: Any) -> str:
        """The completion of ``prompt``."""
        body = {"model": self._model("llm", model), "prompt": prompt, **params}
        data = _raise_for(self.sync.post("/v1/completions", json=body))
        return str(data["choices"][0]["text"])

    def embed(
        self, texts: str | Sequence[str], *, model: str | None = None
    ) -> list[list[float]]:
        """One vector per text, in order."""
        inputs = [texts] if isinstance(texts, str) else list(texts)
        body = {"model": self._model("embedding", model), "input": inputs}
        data = _raise_for(self.sync.post("/v1/embeddings", json=body))
        rows = sorted(data["data"], key=lambda row: row["index"])
        return [list(row["embedding"]) for row in rows]

    # -- asynchronous API --------------------------------------------------------------
    async def amodels(self) -> list[dict[str, Any]]:
        return list(_raise_for(await self.aio.get("/v1/models"))["data"])

    async def _amodel(self, kind: str, model: str | None) -> str:
        if model or kind in self.models_by_kind:
            return model or self.models_by_kind[kind]
        return self._pick(kind, await self.amodels())

    async def achat(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        model: str | None = None,
        **params: Any,
    ) -> str:
        body = {"model": await self._amodel("llm", model), "messages": list(messages)}
        data = _raise_for(
            await self.aio.post("/v1/chat/completions", json={**body, **params})
        )
        return str(data["choices"][0]["message"]["content"] or "")

    async def agenerate(
        self, prompt: str, *, model: str | None = None, **params: Any
    ) -> str:
        body = {"model": await self._amodel("llm", model), "prompt": prompt, **params}
        data = _raise_for(await self.aio.post("/v1/completions", json=body))
        return str(data["choices"][0]["text"])

    async def aembed(
        self, texts: str | Sequence[str], *, model: str | None = None
    ) -> list[list[float]]:
        inputs = [texts] if isinstance(texts, str) else list(texts)
        body = {"model": await self._amodel("embedding", model), "input": inputs}
        data = _raise_for(await self.aio.post("/v1/embeddings", json=body))
        rows = sorted(data["data"], key=lambda row: row["index"])
        return [list(row["embedding"]) for row in rows]
