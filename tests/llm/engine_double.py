"""EngineDouble: a small OpenAI-compatible engine for tests (a test double, not vLLM).

It serves /health, /v1/models, /v1/chat/completions, /v1/completions (stream and not)
and /v1/embeddings with deterministic output, and records what it saw so tests can
check ordering, batching and cancellation. Real-engine tests use vLLM instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MAX_MODEL_LEN = 512


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vector(text: str, dim: int = 8) -> list[float]:
    digest = hashlib.blake2b(text.encode(), digest_size=dim).digest()
    return [b / 255.0 for b in digest]


@dataclass
class DoubleState:
    model: str
    kind: str = "llm"
    token_delay_s: float = 0.0
    fail_status: int | None = None
    healthy: bool = True
    order: list[str] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    active: int = 0
    cancelled: int = 0
    completed: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)


def _bad(message: str, param: str | None = None) -> Response:
    body = {
        "error": {
            "message": message,
            "type": "BadRequestError",
            "param": param,
            "code": 400,
        }
    }
    return JSONResponse(body, status_code=400)


def _tag(body: dict[str, Any]) -> str:
    """What ``order`` records: the last message, the prompt or the first input."""
    if isinstance(body.get("messages"), list) and body["messages"]:
        return str(body["messages"][-1].get("content"))
    value = body.get("prompt", body.get("input"))
    return str(value[0] if isinstance(value, list) and value else value)


def make_app(state: DoubleState) -> Starlette:
    async def health(request: Request) -> Response:
        return Response(status_code=200 if state.healthy else 503)

    async def models(request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": state.model, "object": "model"}]}
        )

    async def _body(request: Request) -> dict[str, Any] | Response:
        """The JSON body, or the error answer (failure mode, bad JSON, other model)."""
        if state.fail_status:
            return JSONResponse(
                {"error": {"message": "double fails"}}, state.fail_status
            )
        try:
            body = await request.json()
        except ValueError:
            return _bad("invalid JSON")
        if not isinstance(body, dict) or body.get("model") != state.model:
            return JSONResponse({"error": {"message": "model not found"}}, 404)
        return body

    async def generate(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        chat = request.url.path.endswith("chat/completions")
        max_tokens = body.get("max_tokens") or 16
        if (
            not isinstance(max_tokens, int)
            or max_tokens < 1
            or max_tokens > MAX_MODEL_LEN
        ):
            return _bad(f"max_tokens must be 1..{MAX_MODEL_LEN}", "max_tokens")
        temperature = body.get("temperature", 1.0)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            return _bad("temperature must be in [0, 2]", "temperature")
        state.bodies.append(body)
        state.order.append(_tag(body))
        n = min(max_tokens, 64)
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        usage = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}
        if not body.get("stream"):
            # like vLLM, stop working when the caller disconnects
            state.active += 1
            work = asyncio.ensure_future(asyncio.sleep(state.token_delay_s * n))

            async def watch() -> None:
                while (await request.receive())["type"] != "http.disconnect":
                    pass

            watcher = asyncio.ensure_future(watch())
            try:
                await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                watcher.cancel()
                state.active -= 1
            if not work.done():
                work.cancel()
                state.cancelled += 1
                return Response(status_code=499)
            state.completed += 1
            text = " ".join(f"t{i}" for i in range(n))
            choice: dict[str, Any] = (
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length",
                }
                if chat
                else {"index": 0, "text": text, "finish_reason": "length"}
            )
            return JSONResponse(
                {
                    "id": "cmpl-double",
                    "object": obj,
                    "created": created,
                    "model": state.model,
                    "choices": [choice],
                    "usage": usage,
                }
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> Any:
            state.active += 1
            finished = False
            try:
                for i in range(n):
                    if state.token_delay_s:
                        await asyncio.sleep(state.token_delay_s)
                    piece = f"t{i}" if i == 0 else f" t{i}"
                    delta: dict[str, Any] = (
                        {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                        if chat
                        else {"index": 0, "text": piece, "finish_reason": None}
                    )
                    chunk = {
                        "id": "cmpl-double",
                        "object": obj + ".chunk",
                        "created": created,
                        "model": state.model,
                        "choices": [delta],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n"
                if include_usage:
                    chunk = {
                        "id": "cmpl-double",
                        "object": obj + ".chunk",
                        "created": created,
                        "model": state.model,
                        "choices": [],
                        "usage": usage,
                    }
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"
                finished = True
                state.completed += 1
            finally:
                state.active -= 1
                if not finished:
                    state.cancelled += 1

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return _bad("input must be a string or a list", "input")
        state.batch_sizes.append(len(inputs))
        state.order.append(_tag(body))
        if state.token_delay_s:
            await asyncio.sleep(state.token_delay_s)
        data = [
            {"object": "embedding", "index": i, "embedding": vector(json.dumps(x))}
            for i, x in enumerate(inputs)
        ]
        tokens = sum(len(json.dumps(x)) // 4 + 1 for x in inputs)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": state.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", generate, methods=["POST"]),
            Route("/v1/completions", generate, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ]
    )


class ServedApp:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServedApp:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(15)
        self.server = self.thread = None


class EngineDouble(ServedApp):
    """A served test-double engine; ``state`` controls and records its behaviour."""

    def __init__(self, model: str, kind: str = "llm", **state: Any) -> None:
        self.state = DoubleState(model=model, kind=kind, **state)
        super().__init__(make_app(self.state))

    def spec(self, engine_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": engine_id,
            "url": self.url,
            "kind": self.state.kind,
            "model": self.state.model,
            **extra,
        }
