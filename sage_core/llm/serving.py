"""Serving admitted requests: waiting for an engine, calling it, failing over, streaming.

:class:`Serving` is the half of :class:`~sage_core.llm.plane.ControlPlane` that runs
on the caller's task: it waits for the grant the scheduler gives, makes the engine
call, puts the request back in the queue with the engine excluded when the engine
fails before the first byte (``max_attempts`` engines at most), merges and splits
embedding batches, and relays streams byte for byte with TTFT/inter-token metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sage_core.common.errors import SageError
from sage_core.llm import batching
from sage_core.llm.dispatch import (
    Dispatcher,
    Retryable,
    StreamMeter,
    Usage,
    error_event,
    usage_of,
)
from sage_core.llm.errors import GatewayError, UpstreamError
from sage_core.llm.http1 import HTTPError, Response

T = TypeVar("T")

if TYPE_CHECKING:
    from sage_core.llm.admission import Admission
    from sage_core.llm.classify import LLMRequest
    from sage_core.llm.config import GatewayConfig
    from sage_core.llm.decisions import DecisionLog
    from sage_core.llm.metrics import GatewayMetrics
    from sage_core.llm.registry import Engine, EngineRegistry
    from sage_core.llm.scheduling import RequestPolicy


@dataclass(slots=True)
class _Grant:
    """What a waiting caller receives: an engine to call, a finished (batched)
    answer, or word that it was queued again after a failure."""

    engine: Engine | None = None
    payload: bytes | None = None
    prompt_tokens: int = 0
    requeued: bool = False
    answered_by: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A non-streamed request's answer: the engine's JSON body and the engine's id."""

    payload: bytes
    engine: str


class StreamHandle:
    """An open stream: iterate it for the raw SSE bytes (first chunk included)."""

    def __init__(self, chunks: AsyncIterator[bytes], engine: str) -> None:
        self.chunks = chunks
        self.engine = engine

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks


class Serving:
    """Request execution; mixed into ControlPlane, which owns the state below."""

    config: GatewayConfig
    registry: EngineRegistry
    admission: Admission
    metrics: GatewayMetrics
    policy: RequestPolicy
    dispatcher: Dispatcher | None
    _futures: dict[int, asyncio.Future[_Grant]]
    _tried: dict[int, set[str]]
    _closing: bool
    decisions: DecisionLog | None

    def wake(self) -> None:
        raise TypeError("Serving is mixed into ControlPlane, which implements wake()")

    def observe(self, batch: list[LLMRequest], seconds: float) -> None:
        """An embedding engine answered ``batch`` in ``seconds`` (the policy learns)."""
        self.policy.observe(batch, seconds)

    # -- waiting for an engine ------------------------------------------------------------
    async def _grant(self, request: LLMRequest) -> _Grant:
        future = self._futures[request.seq]
        if future.done():  # granted at submit: the common case on an idle engine
            return future.result()
        try:
            return await future
        except asyncio.CancelledError:
            if future.cancelled():  # the caller went away while queued
                if self.policy.remove(request):
                    self.admission.left_queue(request.kind, dispatched=False)
            elif future.exception() is None:
                grant = future.result()
                if grant.engine is not None:
                    self.registry.release(grant.engine, request.tokens)
            raise

    def _retry_or_raise(
        self, request: LLMRequest, engine: Engine, exc: Retryable
    ) -> None:
        """Record an engine failure; queue the request again or raise UpstreamError."""
        self.registry.record_failure(engine, str(exc), trip=exc.trip)
        tried = self._tried.setdefault(request.seq, set())
        tried.add(engine.id)
        if len(tried) >= self.config.max_attempts or self._closing:
            raise UpstreamError(
                f"{request.model!r} failed on {len(tried)} engine(s), last "
                f"{engine.id}: {exc}"
            )
        self.registry.record_retry(engine)
        self.metrics.retry(engine.id)
        self.admission.waiting[request.kind] += 1
        self._futures[request.seq] = asyncio.get_running_loop().create_future()
        self.policy.push(request)
        self.wake()

    def _done(self, request: LLMRequest, status: str, usage: Usage) -> None:
        self._futures.pop(request.seq, None)
        self._tried.pop(request.seq, None)
        self.metrics.active -= 1
        self.metrics.finished(
            request,
            status,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
        self.policy.finished(request, status, time.monotonic())
        if self.decisions is not None:
            self.decisions.done(request, status)

    async def _attempts(
        self, request: LLMRequest, call: Callable[[Engine], Awaitable[T]]
    ) -> tuple[_Grant, Engine | None, T]:
        """Wait for an engine and ``call`` it, failing over while it fails before
        answering. Returns the grant, the engine (its slot still held; release it)
        and the call's result — or, for a request answered inside an embedding batch,
        the grant carrying the answer, None and None."""
        while True:
            grant = await self._grant(request)
            if grant.requeued:
                continue
            engine = grant.engine
            if engine is None:
                return grant, None, None  # type: ignore[return-value]
            try:
                return grant, engine, await call(engine)
            except Retryable as exc:
                self.registry.release(engine, request.tokens)
                self._retry_or_raise(request, engine, exc)
            except GatewayError as exc:  # the engine's own 4xx: it answered
                self.registry.release(engine, request.tokens)
                exc.headers.setdefault("X-Sage-Engine", engine.id)
                raise
            except BaseException:
                self.registry.release(engine, request.tokens)
                raise

    # -- non-streamed requests ---------------------------------------------------------------
    async def run(self, request: LLMRequest) -> Answer:
        """Serve a submitted request; returns the engine's JSON answer and its id.

        Raises:
            GatewayError: 4xx passed on from the engine, 502 after failed attempts,
                503 when engines vanished while it waited.
        """
        dispatcher = self.dispatcher
        assert dispatcher is not None, "start() the control plane first"
        status, usage = "error", Usage()

        async def call(engine: Engine) -> tuple[bytes, dict[str, Any]]:
            started = time.monotonic()
            answer = await dispatcher.call(engine, request.kind, request.body)
            if request.kind == "embedding":
                self.observe([request], time.monotonic() - started)
            return answer

        try:
            grant, engine, answer = await self._attempts(request, call)
            if engine is None:  # answered as part of an embedding batch
                status, usage = "ok", Usage(grant.prompt_tokens, 0)
                assert grant.payload is not None
                return Answer(grant.payload, grant.answered_by)
            payload, data = answer
            self.registry.record_success(engine)
            self.registry.release(engine, request.tokens)
            status, usage = "ok", usage_of(data)
            return Answer(payload, engine.id)
        except GatewayError as exc:
            status = exc.code or "error"
            raise
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            self._done(request, status, usage)

    async def _run_batch(
        self, batch: list[LLMRequest], engine: Engine, tokens: int
    ) -> None:
        assert self.dispatcher is not None
        body, spans = batching.merge(batch)
        started = time.monotonic()
        try:
            _, data = await self.dispatcher.call(engine, "embedding", body)
            answers = batching.split(data, batch, spans)
            self.observe(batch, time.monotonic() - started)
        except Retryable as exc:
            self.registry.release(engine, tokens)
            for request in batch:
                future = self._futures.get(request.seq)
                if future is None or future.done():
                    continue
                try:
                    self._retry_or_raise(request, engine, exc)
                    future.set_result(_Grant(requeued=True))
                except GatewayError as final:
                    future.set_exception(final)
            return
        except (GatewayError, SageError, asyncio.CancelledError) as exc:
            self.registry.release(engine, tokens)
            failure = exc if isinstance(exc, GatewayError) else UpstreamError(str(exc))
            failure.headers.setdefault("X-Sage-Engine", engine.id)
            for request in batch:
                future = self._futures.get(request.seq)
                if future is not None and not future.done():
                    future.set_exception(failure)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.registry.record_success(engine, served=len(batch))
        self.registry.release(engine, tokens)
        for request, (payload, prompt_tokens) in zip(batch, answers, strict=True):
            future = self._futures.get(request.seq)
            if future is not None and not future.done():
                future.set_result(
                    _Grant(
                        payload=payload,
                        prompt_tokens=prompt_tokens,
                        answered_by=engine.id,
                    )
                )

    # -- streamed requests ---------------------------------------------------------------------
    async def open_stream(self, request: LLMRequest) -> StreamHandle:
        """Serve a submitted streamed request up to its first byte (failing over
        before it); returns a handle yielding the SSE bytes.

        Raises:
            GatewayError: as :meth:`run`, before any byte was produced.
        """
        dispatcher = self.dispatcher
        assert dispatcher is not None, "start() the control plane first"
        try:
            _, engine, (resp, chunks, first) = await self._attempts(
                request, lambda e: dispatcher.open_stream(e, request.kind, request.body)
            )
            assert engine is not None  # streams are never batched
            return StreamHandle(
                self._relay(request, engine, resp, chunks, first), engine.id
            )
        except GatewayError as exc:
            self._done(request, exc.code or "error", Usage())
            raise
        except asyncio.CancelledError:
            self._done(request, "cancelled", Usage())
            raise

    async def _relay(
        self,
        request: LLMRequest,
        engine: Engine,
        resp: Response,
        chunks: AsyncIterator[bytes],
        first: bytes,
    ) -> AsyncIterator[bytes]:
        meter = StreamMeter(
            lambda at: self.metrics.first_token(request, at),
            lambda gap: self.metrics.inter_token(request.kind, gap),
        )
        status = "error"
        try:
            meter.feed(first)
            yield first
            async for chunk in chunks:
                meter.feed(chunk)
                yield chunk
            status = "error" if meter.error else "ok"
            self.registry.record_success(engine, served=0 if meter.error else 1)
        except HTTPError as exc:
            self.registry.record_failure(engine, f"stream broke: {exc}")
            yield error_event(f"engine {engine.id} failed mid-stream: {exc}")
        except (asyncio.CancelledError, GeneratorExit):
            status = "cancelled"
            raise
        finally:
            await resp.aclose()
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            self.registry.release(engine, request.tokens)
            usage = Usage(
                meter.usage.prompt_tokens,
                meter.usage.completion_tokens or meter.tokens,
            )
            self._done(request, status, usage)
