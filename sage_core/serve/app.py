"""HTTP routes of a served pipeline (Starlette).

* ``POST /v1/pipelines/{name}``: a JSON item -> the output item (200), or the list of
  outputs when the pipeline has a flat_map, 204 when a filter dropped it;
  ``{"inputs": [...]}`` -> ``{"outputs": [...]}`` (``null`` for a dropped item, an
  OpenAI-shaped ``{"error": ...}`` for a failed one).
* ``POST /v1/chat/completions`` (``model`` = the pipeline's name): the last user
  message becomes ``{"query": ...}``; the output's ``answer`` is the reply and its
  ``contexts`` ride along as ``sources``; ``stream: true`` answers as SSE chunks,
  the ``generate`` stage's tokens as they are generated (see :mod:`.stream`).
* ``GET /v1/pipelines/{name}/scaling``: operators' replicas, autoscaling ranges
  and every scale decision with its reason.
* ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text).

Errors leave in OpenAI's shape: 400 bad body, 404 unknown pipeline/model, 429 over the
in-flight cap (``Retry-After``), 500 an operator failed on this request (the others go
on), 503 the pipeline is not running, 504 ``X-SLO-Deadline-Ms`` passed (the request's
items are not given to further operators).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sage_core.llm.errors import (
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    OverloadedError,
    error_response,
)
from sage_core.observe.histogram import LatencyHistogram, cumulative
from sage_core.serve.hub import HubNotFound, Outcome, Overloaded, RequestHub
from sage_core.serve.stream import ChatChunks, stream_chat

if TYPE_CHECKING:
    from sage_core.serve.server import PipelineServer

DEADLINE_HEADER = "x-slo-deadline-ms"


class OperatorError(GatewayError):
    """An operator of the pipeline failed on this request (500)."""

    status = 500
    type = "server_error"
    code = "operator_error"


class DeadlineExceeded(GatewayError):
    """The request's ``X-SLO-Deadline-Ms`` passed before its answer (504)."""

    status = 504
    type = "server_error"
    code = "deadline_exceeded"


class PipelineUnavailable(GatewayError):
    """The served pipeline is not running (503)."""

    status = 503
    type = "server_error"
    code = "pipeline_unavailable"


def _failure(outcome: Outcome) -> GatewayError:
    if outcome.status == "expired":
        return DeadlineExceeded("the request's deadline passed while it was queued")
    err = outcome.error
    return OperatorError(
        f"operator {err.get('operator')!r} failed: {err.get('type')}: "
        f"{err.get('message')}"
    )


def _answer(outcome: Outcome) -> Any:
    return outcome.items if outcome.multi else outcome.items[0]


class ServeApp:
    """The routes over one :class:`PipelineServer`."""

    def __init__(self, server: PipelineServer) -> None:
        self.server = server
        self.latency = LatencyHistogram()

    # --- helpers ----------------------------------------------------------------

    async def _body(self, request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"the body is not JSON: {exc}") from None

    def _deadline_s(self, request: Request) -> float | None:
        raw = request.headers.get(DEADLINE_HEADER)
        if raw is None:
            return self.server.default_deadline_s
        try:
            ms = float(raw)
        except ValueError:
            ms = -1.0
        if ms <= 0:
            raise InvalidRequestError(
                f"X-SLO-Deadline-Ms must be a positive number of ms, got {raw!r}",
                param="X-SLO-Deadline-Ms",
            )
        return ms / 1000.0

    def _submit(
        self, request: Request, items: list[Any], stream: bool = False
    ) -> tuple[list[tuple[str, asyncio.Future[Outcome]]], RequestHub, float | None]:
        """Admit ``items``: their (request id, outcome) pairs, the hub, the budget."""
        hub = self.server.hub
        if hub is None or self.server.failure is not None:
            raise PipelineUnavailable(self.server.failure or "the pipeline is stopped")
        budget = self._deadline_s(request)
        deadline = time.time() + budget if budget is not None else None
        try:
            return hub.submit(items, deadline=deadline, stream=stream), hub, budget
        except Overloaded as exc:
            raise OverloadedError(str(exc), retry_after_s=1) from None
        except HubNotFound as exc:
            raise PipelineUnavailable(str(exc)) from None

    async def _run(self, request: Request, items: list[Any]) -> list[Outcome]:
        """Submit ``items`` and wait for their outcomes (or the deadline)."""
        t0 = time.perf_counter()
        pending, hub, budget = self._submit(request, items)
        futures = [f for _, f in pending]
        try:
            done = await asyncio.wait_for(asyncio.gather(*futures), timeout=budget)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                f"no answer within X-SLO-Deadline-Ms ({(budget or 0) * 1000:.0f} ms)"
            ) from None
        finally:
            for rid, fut in pending:
                if not fut.done() or fut.cancelled():  # no one waits for it
                    hub.cancel(rid)
        self.latency.record(time.perf_counter() - t0, len(items))
        return list(done)

    # --- routes -----------------------------------------------------------------

    async def pipeline(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name != self.server.name:
            raise NotFoundError(
                f"no pipeline {name!r} here (this server serves {self.server.name!r})",
                param="name",
            )
        body = await self._body(request)
        if isinstance(body, dict) and set(body) == {"inputs"}:
            inputs = body["inputs"]
            if not isinstance(inputs, list) or not inputs:
                raise InvalidRequestError(
                    '"inputs" must be a non-empty list of items', param="inputs"
                )
            outcomes = await self._run(request, inputs)
            outputs = [
                _answer(o) if o.status == "ok"
                else None if o.status == "dropped"
                else _failure(o).body()
                for o in outcomes
            ]  # fmt: skip
            return JSONResponse({"outputs": outputs})
        (outcome,) = await self._run(request, [body])
        if outcome.status == "dropped":
            return Response(status_code=204)
        if outcome.status != "ok":
            raise _failure(outcome)
        return JSONResponse(_answer(outcome))

    async def chat(self, request: Request) -> Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise InvalidRequestError("the body must be a JSON object")
        model = body.get("model")
        if model != self.server.name:
            raise ModelNotFoundError(str(model), [self.server.name])
        query = _last_user_message(body.get("messages"))
        if body.get("stream"):
            return self._stream(request, {"query": query})
        (outcome,) = await self._run(request, [{"query": query}])
        answer, sources = self._answer_of(outcome)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.server.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": None,
                "sources": sources,
            }
        )

    def _answer_of(self, outcome: Outcome) -> tuple[str, list[dict[str, Any]]]:
        """The reply text and sources of a chat request's outcome.

        Raises:
            GatewayError: the request failed, was dropped or has no ``answer``.
        """
        if outcome.status == "dropped":
            raise OperatorError("the pipeline produced no answer for this question")
        if outcome.status != "ok":
            raise _failure(outcome)
        item = outcome.items[-1]
        if not isinstance(item, dict) or not isinstance(item.get("answer"), str):
            raise OperatorError(
                f"pipeline {self.server.name!r} does not produce an 'answer' field, "
                f"so it cannot answer chat completions; use /v1/pipelines/"
                f"{self.server.name}"
            )
        return item["answer"], _sources(item)

    def _stream(self, request: Request, item: dict[str, Any]) -> Response:
        """A streamed chat completion: admitted now (429/503 as for the others),
        answered as SSE while the pipeline works on it."""
        ((rid, future),), hub, budget = self._submit(request, [item], stream=True)
        t0 = time.perf_counter()

        def done(fut: asyncio.Future[Outcome]) -> None:
            self.latency.record(time.perf_counter() - t0, 1)

        future.add_done_callback(done)
        events = stream_chat(
            ChatChunks(self.server.name),
            future,
            hub.tokens(rid),
            self._answer_of,
            budget=budget,
            expired=lambda: DeadlineExceeded(
                f"no answer within X-SLO-Deadline-Ms ({(budget or 0) * 1000:.0f} ms)"
            ),
            cancel=lambda: hub.cancel(rid),
        )
        return StreamingResponse(events, media_type="text/event-stream")

    async def scaling(self, request: Request) -> Response:
        server = self.server
        if request.path_params["name"] != server.name:
            raise NotFoundError(f"no pipeline {request.path_params['name']!r} here")
        scaler = server.scaler
        return JSONResponse(
            {
                "pipeline": server.name,
                "generation": server.generation,
                "parallelism": dict(server.parallelism),
                "autoscale": {
                    op: {"min": r.min, "max": r.max}
                    for op, r in (scaler.ranges.items() if scaler else [])
                },
                "decisions": [d.to_dict() for d in scaler.decisions] if scaler else [],
                "changes": list(server.changes),
            }
        )

    async def models(self, request: Request) -> Response:
        entry = {"id": self.server.name, "object": "model", "owned_by": "sage"}
        return JSONResponse({"object": "list", "data": [entry]})

    async def health(self, request: Request) -> Response:
        server = self.server
        ok = server.failure is None and server.hub is not None
        return JSONResponse(
            {
                "status": "ok" if ok else "unavailable",
                "pipeline": server.name,
                "in_flight": server.hub.in_flight if server.hub else 0,
                "waiting": server.hub.waiting if server.hub else 0,
                "max_in_flight": server.max_in_flight,
                "error": server.failure,
            },
            status_code=200 if ok else 503,
        )

    async def metrics(self, request: Request) -> Response:
        hub, name = self.server.hub, self.server.name
        lines = [
            "# HELP sage_serve_requests_total Requests by outcome.",
            "# TYPE sage_serve_requests_total counter",
        ]
        for what, n in sorted((hub.counts if hub else {}).items()):
            lines.append(
                f'sage_serve_requests_total{{pipeline="{name}",outcome="{what}"}} {n}'
            )
        lines += [
            "# HELP sage_serve_in_flight Requests admitted and not yet answered.",
            "# TYPE sage_serve_in_flight gauge",
            f'sage_serve_in_flight{{pipeline="{name}"}} {hub.in_flight if hub else 0}',
            "# HELP sage_serve_waiting Requests admitted that no source has taken yet.",
            "# TYPE sage_serve_waiting gauge",
            f'sage_serve_waiting{{pipeline="{name}"}} {hub.waiting if hub else 0}',
            "# HELP sage_serve_request_seconds Time from admission to answer.",
            "# TYPE sage_serve_request_seconds histogram",
        ]
        snap = self.latency.snapshot()
        for le, count in cumulative(snap):
            lines.append(
                f'sage_serve_request_seconds_bucket{{pipeline="{name}",le="{le}"}} '
                f"{count}"
            )
        lines.append(
            f'sage_serve_request_seconds_sum{{pipeline="{name}"}} {snap["sum"]}'
        )
        lines.append(
            f'sage_serve_request_seconds_count{{pipeline="{name}"}} {snap["count"]}'
        )
        lines += [
            "# HELP sage_serve_replicas Replicas of each operator of the pipeline.",
            "# TYPE sage_serve_replicas gauge",
        ]
        for op, n in sorted(self.server.parallelism.items()):
            lines.append(
                f'sage_serve_replicas{{pipeline="{name}",operator="{op}"}} {n}'
            )
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def _last_user_message(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", param="messages")
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(
                    p.get("text", "") for p in content if isinstance(p, dict)
                )
            if isinstance(content, str) and content.strip():
                return content
    raise InvalidRequestError(
        "messages has no user message with text content", param="messages"
    )


def _sources(item: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for c in item.get("contexts") or []:
        if isinstance(c, dict):
            out.append({k: c.get(k) for k in ("id", "score", "meta") if k in c})
    return out


def create_app(server: PipelineServer) -> Starlette:
    """The Starlette app serving ``server``'s pipeline."""
    app = ServeApp(server)

    def wrap(fn: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except GatewayError as exc:
                return error_response(exc)

        return endpoint

    routes = [
        Route("/v1/pipelines/{name}", wrap(app.pipeline), methods=["POST"]),
        Route("/v1/pipelines/{name}/scaling", wrap(app.scaling), methods=["GET"]),
        Route("/v1/chat/completions", wrap(app.chat), methods=["POST"]),
        Route("/v1/models", wrap(app.models), methods=["GET"]),
        Route("/health", wrap(app.health), methods=["GET"]),
        Route("/metrics", wrap(app.metrics), methods=["GET"]),
    ]
    return Starlette(routes=routes)
