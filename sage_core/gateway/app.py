"""Starlette application of the gateway: OpenAI routes, health, metrics, admin.

Every error leaves in OpenAI's shape ``{"error": {message, type, param, code}}``:
400 malformed/invalid (``param`` names the field), 401 missing/wrong API key when keys
are configured, 404 unknown model or route, 413 body over ``max_body_bytes``, 429
overload (``Retry-After``), 503 no healthy engine. Admin routes take admin keys
only (403 for an inference key, see :mod:`sage_core.gateway.access`). Every response
an engine produced carries ``X-Sage-Engine`` (the engine's id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sage_core.common.errors import SageError, UnknownPluginError
from sage_core.gateway.access import Access, EngineHosts
from sage_core.gateway.schema import openapi_schema
from sage_core.llm.classify import classify
from sage_core.llm.config import GatewayConfig
from sage_core.llm.engine_spec import EngineSpec
from sage_core.llm.errors import (
    ConfigError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    error_response,
)
from sage_core.llm.plane import ControlPlane

logger = logging.getLogger(__name__)

JSON = "application/json"
T = TypeVar("T")


class ConflictError(GatewayError):
    """The object exists already (409)."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class SSEResponse(StreamingResponse):
    """Streams server-sent events; when the client goes away the iterator is closed
    at once, which closes the engine connection (the engine stops generating)."""

    def __init__(self, chunks: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        super().__init__(
            chunks,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
        )
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in self.chunks:
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        streaming = asyncio.ensure_future(pump())
        watching = asyncio.ensure_future(watch())
        try:
            await asyncio.wait(
                {streaming, watching}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (streaming, watching):
                task.cancel()
            await asyncio.gather(streaming, watching, return_exceptions=True)
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T | None:
    """Await ``work``; if the client disconnects first, cancel it and return None."""
    me = asyncio.current_task()
    assert me is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        me.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        if sys.version_info >= (3, 11):
            me.uncancel()
        return None
    finally:
        watcher.cancel()


class Gateway:
    """Route handlers bound to one control plane."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.plane = ControlPlane(config)
        self.access = Access(config.api_keys, config.admin_keys)
        self.engine_hosts = EngineHosts(
            (spec.url for spec in config.engines), config.allowed_engine_hosts
        )

    # -- helpers ----------------------------------------------------------------------
    def _auth(self, request: Request) -> str | None:
        return self.access.inference(request.headers)

    def _admin(self, request: Request) -> None:
        self.access.admin(request.headers)

    async def _json(self, request: Request) -> Any:
        limit = self.config.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLargeError(
                f"the body is {length} bytes; the limit is {limit}"
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLargeError(f"the body is over the {limit}-byte limit")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None

    # -- OpenAI routes ------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        key = self._auth(request)
        body = await self._json(request)
        llm_request = classify(request.url.path, body, request.headers, api_key=key)
        self.plane.submit(llm_request)
        headers = {"X-Request-Id": llm_request.id}
        if llm_request.stream:
            handle = await self.plane.open_stream(llm_request)
            headers["X-Sage-Engine"] = handle.engine
            return SSEResponse(handle.chunks, headers)
        answer = await _until_disconnect(request, self.plane.run(llm_request))
        if answer is None:  # the client is gone; nobody reads this
            return Response(status_code=499)
        headers["X-Sage-Engine"] = answer.engine
        return Response(answer.payload, media_type=JSON, headers=headers)

    async def models(self, request: Request) -> Response:
        self._auth(request)
        created = int(time.time())
        data = [
            {
                "id": model,
                "object": "model",
                "created": created,
                "owned_by": "sage",
                "kind": kind,
                "engines": len(self.plane.registry.serving(kind, model)),
            }
            for model, kind in sorted(self.plane.models().items())
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(self, request: Request) -> Response:
        report = self.plane.registry.health_report()
        return JSONResponse(
            report, status_code=503 if report["status"] == "unavailable" else 200
        )

    async def prometheus(self, request: Request) -> Response:
        metrics = self.plane.metrics
        metrics.refresh_gauges(self.plane.registry, dict(self.plane.admission.waiting))
        return Response(
            metrics.prometheus(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    # -- admin routes ---------------------------------------------------------------------
    async def admin_metrics(self, request: Request) -> Response:
        self._admin(request)
        snap = self.plane.metrics.snapshot()
        snap["queued"] = dict(self.plane.admission.waiting)
        snap["policy"] = self.plane.policy.describe()
        snap["routers"] = self.plane.router_names
        snap["engines"] = self.plane.registry.describe()
        return JSONResponse(snap)

    async def get_policy(self, request: Request) -> Response:
        self._admin(request)
        return JSONResponse(self.plane.policy.describe())

    async def put_policy(self, request: Request) -> Response:
        self._admin(request)
        body = await self._json(request)
        if not isinstance(body, dict):
            raise InvalidRequestError('send {"policy": NAME, "config": {...}}')
        name = body.get("policy", body.get("name"))
        config = body.get("config") or {}
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(
                "'policy' must name a request policy", param="policy"
            )
        if not isinstance(config, dict):
            raise InvalidRequestError("'config' must be an object", param="config")
        try:
            self.plane.set_policy(name, config)
        except (UnknownPluginError, ConfigError) as exc:
            raise InvalidRequestError(str(exc), param="policy") from None
        return JSONResponse(self.plane.policy.describe())

    async def list_engines(self, request: Request) -> Response:
        self._admin(request)
        return JSONResponse({"engines": self.plane.registry.describe()})

    async def add_engine(self, request: Request) -> Response:
        self._admin(request)
        body = await self._json(request)
        try:
            spec = EngineSpec.from_dict(body)
        except ConfigError as exc:
            raise InvalidRequestError(str(exc)) from None
        self.engine_hosts.check(spec.url)
        if spec.id in self.plane.registry.engines:
            raise ConflictError(f"engine {spec.id!r} is already registered", param="id")
        engine = self.plane.registry.add(spec)
        await self.plane.registry.check(engine)
        return JSONResponse(engine.describe(), status_code=201)

    async def remove_engine(self, request: Request) -> Response:
        self._admin(request)
        drain = request.query_params.get("drain", "true").lower() not in (
            "0",
            "false",
            "no",
        )
        engine = await self.plane.registry.remove(
            request.path_params["engine_id"],
            drain=drain,
            timeout_s=self.config.drain_timeout_s,
        )
        if self.plane.dispatcher is not None:
            self.plane.dispatcher.forget(engine.spec.url)
        return JSONResponse({**engine.describe(), "removed": True})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_schema())


def _wrap(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewayError as exc:
            return error_response(exc)
        except SageError as exc:
            return error_response(InvalidRequestError(str(exc)))
        except ClientDisconnect:  # gone while sending its body: nobody to answer
            return Response(status_code=499)

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: GatewayError = NotFoundError(
            f"no route {request.method} {request.url.path}"
        )
    else:
        error = GatewayError(str(exc.detail))
        error.status, error.type, error.code = (
            exc.status_code,
            "invalid_request_error",
            None,
        )
    return error_response(error)


def create_app(config: GatewayConfig | None = None) -> Starlette:
    """The gateway application; its lifespan starts and stops the control plane.

    The :class:`Gateway` (with ``.plane``) is at ``app.state.gateway``.
    """
    gateway = Gateway(config or GatewayConfig())
    g = gateway
    routes = [
        Route("/v1/chat/completions", _wrap(g.infer), methods=["POST"]),
        Route("/v1/completions", _wrap(g.infer), methods=["POST"]),
        Route("/v1/embeddings", _wrap(g.infer), methods=["POST"]),
        Route("/v1/models", _wrap(g.models), methods=["GET"]),
        Route("/health", _wrap(g.health), methods=["GET"]),
        Route("/metrics", _wrap(g.prometheus), methods=["GET"]),
        Route("/admin/metrics", _wrap(g.admin_metrics), methods=["GET"]),
        Route("/admin/policy", _wrap(g.get_policy), methods=["GET"]),
        Route("/admin/policy", _wrap(g.put_policy), methods=["PUT"]),
        Route("/admin/set_policy", _wrap(g.put_policy), methods=["POST"]),
        Route("/admin/engines", _wrap(g.list_engines), methods=["GET"]),
        Route("/admin/engines", _wrap(g.add_engine), methods=["POST"]),
        Route("/admin/engines/{engine_id}", _wrap(g.remove_engine), methods=["DELETE"]),
        Route("/openapi.json", g.openapi, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.plane.start()
        try:
            yield
        finally:
            await gateway.plane.stop()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.gateway = gateway
    return app
