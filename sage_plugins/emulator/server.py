"""The emulator's HTTP side: OpenAI-compatible endpoints for each emulated engine.

One process, one event loop, one uvicorn server per engine port. Each engine answers
``/health``, ``/v1/models``, vLLM-style ``/metrics`` (``vllm:num_requests_running``,
``vllm:num_requests_waiting``, ``vllm:gpu_cache_usage_perc``,
``vllm:num_preemptions_total``) and either ``/v1/completions`` +
``/v1/chat/completions`` (stream and non-stream; a chat request offering ``tools``
gets emulated tool calls, see ``tools.py``) or ``/v1/embeddings``. Every response
carries ``x-sage-emulated: true`` and ``system_fingerprint: "sage-emulated"``.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sage_plugins.emulator.engines import (
    EmbeddingEngine,
    Engine,
    LLMEngine,
    pseudo_vector,
)
from sage_plugins.emulator.profile import count_tokens
from sage_plugins.emulator.tools import tool_call

HEADERS = {"x-sage-emulated": "true"}
FINGERPRINT = "sage-emulated"


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": param,
            "code": None,
        }
    }
    return JSONResponse(body, status_code=status, headers=HEADERS)


def _prompt_text(body: dict[str, Any], chat: bool) -> str:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        parts = []
        for message in messages:
            if not isinstance(message, dict):
                raise TypeError("every message must be an object")
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(
                    str(p.get("text", "")) for p in content if isinstance(p, dict)
                )
            parts.append(str(content or ""))
            if message.get("tool_calls"):
                parts.append(json.dumps(message["tool_calls"]))
        if body.get("tools"):
            parts.append(
                json.dumps(body["tools"])
            )  # a template puts them in the prompt
        return " ".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = " ".join(str(p) for p in prompt)
    if not isinstance(prompt, str):
        raise TypeError("'prompt' must be a string")
    return prompt


def _inputs(value: Any, per_word: float) -> tuple[list[str], list[int]]:
    """Texts and token counts of an embeddings ``input``."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError("'input' must be a string or a non-empty list")
    texts, tokens = [], []
    for item in value:
        if isinstance(item, str):
            texts.append(item)
            tokens.append(count_tokens(item, per_word))
        elif isinstance(item, list):
            texts.append(json.dumps(item))
            tokens.append(max(1, len(item)))
        else:
            raise TypeError("each input must be a string or a list of token ids")
    return texts, tokens


class EngineApp:
    """The Starlette app of one emulated engine."""

    def __init__(
        self, engine: Engine, tokens_per_word: float, tool_rounds: int = 1
    ) -> None:
        self.engine = engine
        self.per_word = tokens_per_word
        self.tool_rounds = tool_rounds
        routes = [
            Route("/health", self.health),
            Route("/v1/models", self.models),
            Route("/metrics", self.metrics),
        ]
        if isinstance(engine, LLMEngine):
            routes += [
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        else:
            routes.append(Route("/v1/embeddings", self.embeddings, methods=["POST"]))
        self.app = Starlette(routes=routes)

    async def health(self, request: Request) -> Response:
        return Response(status_code=200, headers=HEADERS)

    async def models(self, request: Request) -> Response:
        card = {
            "id": self.engine.model,
            "object": "model",
            "created": 0,
            "owned_by": FINGERPRINT,
        }
        return JSONResponse({"object": "list", "data": [card]}, headers=HEADERS)

    async def metrics(self, request: Request) -> Response:
        label = f'{{model_name="{self.engine.model}",engine="{self.engine.id}"}}'
        lines = ["# sage engine emulator: emulated figures, no model runs here"]
        for name, value in self.engine.metrics().items():
            lines.append(f"# TYPE vllm:{name} gauge")
            lines.append(f"vllm:{name}{label} {float(value)}")
        lines.append(f"sage_emulator_busy_seconds_total{label} {self.engine.busy_s}")
        return Response(
            "\n".join(lines) + "\n", media_type="text/plain", headers=HEADERS
        )

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise ValueError("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise TypeError("the body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.engine.model:
            raise LookupError(f"The model `{model}` does not exist.")
        return body

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def _generate(self, request: Request, *, chat: bool) -> Response:
        assert isinstance(self.engine, LLMEngine)
        try:
            body = await self._body(request)
            prompt = count_tokens(_prompt_text(body, chat), self.per_word)
            max_tokens = int(
                body.get("max_completion_tokens") or body.get("max_tokens") or 16
            )
            call = tool_call(body, self.tool_rounds) if chat else None
            if call is not None:  # what is decoded: the call's arguments
                args = call["function"]["arguments"]
                max_tokens = min(max_tokens, count_tokens(args, self.per_word))
            seq = self.engine.submit(
                prompt, max_tokens, stream=bool(body.get("stream"))
            )
        except LookupError as exc:
            return _error(404, str(exc), "model")
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
        meta = {
            "id": rid,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.engine.model,
            "system_fingerprint": FINGERPRINT,
        }
        usage = {
            "prompt_tokens": seq.prompt_tokens,
            "completion_tokens": seq.max_tokens,
            "total_tokens": seq.prompt_tokens + seq.max_tokens,
        }
        if body.get("stream"):
            options = body.get("stream_options") or {}
            return StreamingResponse(
                self._stream(
                    seq,
                    meta,
                    chat,
                    usage if options.get("include_usage") else None,
                    call,
                ),
                media_type="text/event-stream",
                headers=HEADERS,
            )
        try:
            await seq.finished
        finally:
            self.engine.abort(seq)
        text = " tok" * seq.max_tokens
        if call is not None:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
            obj = "chat.completion"
        elif chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": "length"}
            obj = "text_completion"
        out = {**meta, "object": obj, "choices": [choice], "usage": usage}
        return JSONResponse(out, headers=HEADERS)

    async def _stream(
        self,
        seq: Any,
        meta: dict[str, Any],
        chat: bool,
        usage: dict[str, int] | None,
        call: dict[str, Any] | None = None,
    ) -> AsyncIterator[bytes]:
        def event(payload: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        try:
            if call is not None:  # the call goes out whole once it is decoded
                await seq.finished
                calls = [{"index": 0, **call}]
                yield event(
                    {
                        **meta,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "tool_calls": calls},
                                "finish_reason": "tool_calls",
                            }
                        ],
                    }
                )
            while call is None and (n := await seq.tokens.get()) is not None:
                last = n >= seq.max_tokens
                if chat:
                    delta: dict[str, Any] = {"content": " tok"}
                    if n == 1:
                        delta["role"] = "assistant"
                    choice = {"index": 0, "delta": delta}
                else:
                    choice = {"index": 0, "text": " tok"}
                choice["finish_reason"] = "length" if last else None
                yield event({**meta, "choices": [choice]})
            if usage is not None:
                yield event({**meta, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
        finally:
            self.engine.abort(seq)  # a client that left stops its generation

    async def embeddings(self, request: Request) -> Response:
        assert isinstance(self.engine, EmbeddingEngine)
        try:
            body = await self._body(request)
            texts, tokens = _inputs(body.get("input"), self.per_word)
        except LookupError as exc:
            return _error(404, str(exc), "model")
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc), "input")
        job = self.engine.submit(tokens)
        # the response is built while the emulated batch runs: the real server's
        # own encoding is in the fitted batch time, so it must not add to it here
        dims = int(body.get("dimensions") or self.engine.timing.dimensions)
        packed = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector: Any = pseudo_vector(text, dims)
            if packed:
                raw = struct.pack(f"<{dims}f", *vector)
                vector = base64.b64encode(raw).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        out = {
            "object": "list",
            "model": self.engine.model,
            "data": data,
            "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)},
        }
        ready = JSONResponse(out, headers=HEADERS)
        await job.done
        return ready
