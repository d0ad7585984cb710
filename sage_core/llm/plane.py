"""The control plane: admission, queueing by policy, routing, dispatch with failover.

Life of a request: :meth:`ControlPlane.submit` checks the model and admits the request
into its class queue (or raises 404/503/429); the active policy orders the queue;
whenever an engine slot may be free the plane asks the policy for the next request (or
embedding batch), asks the router for an engine among the healthy ones with a free slot,
and hands the engine to the waiting caller (:meth:`run` / :meth:`open_stream`), which
makes the call. A failure before the first byte puts the request back in the queue
with that engine excluded (up to ``max_attempts`` engines); after the first byte a
stream is passed through as it comes. A caller that goes away (cancellation) leaves
the queue, or closes its engine connection so the engine stops generating.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx

from sage_core import plugins
from sage_core.llm import managed
from sage_core.llm.admission import Admission
from sage_core.llm.decisions import DecisionLog
from sage_core.llm.dispatch import (
    Dispatcher,
)
from sage_core.llm.errors import (
    ConfigError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    NoHealthyEngineError,
    QueueTimeoutError,
    UpstreamError,
)
from sage_core.llm.metrics import GatewayMetrics
from sage_core.llm.registry import HEALTHY, STARTING, Engine, EngineRegistry
from sage_core.llm.serving import Serving, _Grant
from sage_core.llm.signals import MetricsPoller
from sage_core.routing import Candidate, Router, RouteRequest, colocation_signals

if TYPE_CHECKING:
    from sage_core.llm.classify import LLMRequest
    from sage_core.llm.config import GatewayConfig
    from sage_core.llm.scheduling import RequestPolicy

logger = logging.getLogger(__name__)


def make_policy(name: str, config: dict[str, Any] | None = None) -> RequestPolicy:
    """Instantiate a request policy plugin by name.

    Raises:
        UnknownPluginError: no request policy of that name.
        ConfigError: it rejects its config.
    """
    entry = plugins.resolve("request-policy", name)
    try:
        return entry.obj(**(config or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"policy {name!r} rejected its config: {exc}") from None


def make_router(name: str, config: dict[str, Any] | None = None) -> Router:
    """Instantiate a router plugin usable for requests (scope requests or any)."""
    entry = plugins.resolve("router", name, scope="requests")
    if entry.meta.get("scope") not in ("requests", "any"):
        raise ConfigError(
            f"router {name!r} routes dataflow items only; see `sage plugins --kind "
            f"router` for request routers"
        )
    try:
        return entry.obj(**(config or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"router {name!r} rejected its config: {exc}") from None


class _View:
    """The DispatchView a policy reads (see ``sage_core.llm.scheduling``)."""

    __slots__ = ("now", "plane")

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.now = time.monotonic()

    def ready(self, pool: str) -> bool:
        kind, _, model = pool.partition(":")
        return any(
            e.healthy and e.free > 0 for e in self.plane.registry.serving(kind, model)
        )

    def inflight(self, pool: str) -> int:
        kind, _, model = pool.partition(":")
        return sum(e.inflight for e in self.plane.registry.serving(kind, model))

    def inflight_kind(self, engine_kind: str) -> int:
        return sum(
            e.inflight
            for e in self.plane.registry.engines.values()
            if e.kind == engine_kind
        )

    def engines(self, pool: str) -> int:
        kind, _, model = pool.partition(":")
        return sum(1 for e in self.plane.registry.serving(kind, model) if e.healthy)

    def ready_apart(self, pool: str) -> bool:
        kind, _, model = pool.partition(":")
        return any(
            e.healthy and e.free > 0 and not self.plane.colocated_inflight(e)
            for e in self.plane.registry.serving(kind, model)
        )


class ControlPlane(Serving):
    """Engines, queues, policy, routers and metrics of one gateway.

    Call ``await start()`` and ``await stop()`` on the event loop that serves
    requests.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.registry = EngineRegistry(health=config.health, on_change=self.wake)
        self.admission = Admission(
            queue_limits=config.queue_limits, rate_limit=config.rate_limit
        )
        self.policy = make_policy(config.policy, dict(config.policy_config))
        self.router_names = {
            "llm": config.router,
            "embedding": config.embedding_router or config.router,
        }
        self.routers = {
            kind: make_router(name, dict(config.router_config))
            for kind, name in self.router_names.items()
        }
        for spec in config.engines:
            self.registry.add(spec)
        self._seq = itertools.count(1)
        self._futures: dict[int, asyncio.Future[_Grant]] = {}
        self._tried: dict[int, set[str]] = {}
        self._parked: list[list[LLMRequest]] = []
        self._pumping = False
        self._again = False
        self._closing = False
        self._wake = asyncio.Event()
        self._http: httpx.AsyncClient | None = None
        self.dispatcher: Dispatcher | None = None
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.decisions = (
            DecisionLog(config.decision_log) if config.decision_log else None
        )
        self.poller: MetricsPoller | None = None
        if any(r.engine_metrics for r in self.routers.values()):
            interval_ms = float(config.router_config.get("metrics_interval_ms", 250))
            self.poller = MetricsPoller(self.registry, interval_ms / 1000.0)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Open the engine connection pool, check engines, start the timers."""
        self._http = httpx.AsyncClient(timeout=self.config.health.timeout_s)
        self.dispatcher = Dispatcher(timeout_s=self.config.request_timeout_s)
        for entry in self.config.managed:
            spec, stop, loading_until = await asyncio.to_thread(managed.launch, entry)
            self.registry.add(spec, on_stop=stop, loading_until=loading_until)
        await self.registry.start(self._http)
        if self.decisions is not None:
            self.decisions.start(self.config, list(self.registry.engines.values()))
        if self.poller is not None:
            self.poller.start(self._http)
        self._timer = asyncio.get_running_loop().create_task(self._timer_loop())

    async def stop(self) -> None:
        """Refuse new work, fail queued requests (503), drain in-flight ones within
        ``drain_timeout_s``, stop managed engines, close connections."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self.poller is not None:
            await self.poller.stop()
        for request in self.policy.requests():
            self._fail_queued(
                request, NoHealthyEngineError("the gateway is shutting down")
            )
        await self.registry.stop(drain_timeout_s=self.config.drain_timeout_s)
        for task in list(self._tasks):
            task.cancel()
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self._http is not None:
            await self._http.aclose()
        if self.decisions is not None:
            self.decisions.close()

    # -- admission -----------------------------------------------------------------------
    def models(self) -> dict[str, str]:
        """model -> engine kind (``llm``/``embedding``)."""
        return self.registry.models()

    def submit(self, request: LLMRequest) -> None:
        """Admit a request into its class queue.

        Raises:
            ModelNotFoundError: no engine serves the model (404).
            InvalidRequestError: the model is of the other kind (400).
            NoHealthyEngineError: every engine of the model is down (503).
            OverloadedError: the class queue is full or a rate limit hit (429).
        """
        try:
            if self._closing:
                raise NoHealthyEngineError("the gateway is shutting down")
            models = self.registry.models()
            kind = models.get(request.model)
            if kind is None:
                raise ModelNotFoundError(request.model, list(models))
            if kind != request.engine_kind:
                route = "/v1/embeddings" if kind == "embedding" else "/v1/completions"
                raise InvalidRequestError(
                    f"{request.model!r} is an {kind} model; send it to {route}",
                    param="model",
                )
            engines = self.registry.serving(kind, request.model)
            if not any(e.state in (HEALTHY, STARTING) for e in engines):
                raise NoHealthyEngineError(
                    f"no healthy engine serves {request.model!r} right now "
                    f"({', '.join(f'{e.id}: {e.state}' for e in engines)})"
                )
            self.admission.admit(request.kind, request.api_key)
        except GatewayError as exc:
            self.metrics.rejected_request(request.kind, exc.code or exc.type)
            raise
        request.seq = next(self._seq)
        self._futures[request.seq] = asyncio.get_running_loop().create_future()
        self.metrics.active += 1
        self.policy.push(request)
        self.wake()

    def set_policy(self, name: str, config: dict[str, Any] | None = None) -> None:
        """Switch the request policy; queued requests move over in arrival order."""
        new = make_policy(name, config)
        for request in self.policy.requests():
            new.push(request)
        self.policy = new
        if self.decisions is not None:
            self.decisions.policy(name, config)
        logger.info("request policy is now %s %s", name, config or {})
        self.wake()

    # -- scheduling ------------------------------------------------------------------------
    def wake(self) -> None:
        """Capacity or the queue changed: release whatever can run now."""
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._pump()
        finally:
            self._pumping = False
        if self.policy.wake_after(time.monotonic()) is not None:
            self._wake.set()  # a batch wait bound is running: re-arm the timer

    def _pump(self) -> None:
        view = _View(self)
        while True:
            batch = self.policy.pop(view)
            if not batch:
                break
            self._assign(batch)
        events = self.policy.take_events()
        if events and self.decisions is not None:
            for record in events:
                self.decisions.policy_event(record, view.now)
        parked, self._parked = self._parked, []
        for batch in parked:
            for request in batch:
                self.policy.push(request)

    def _assign(self, batch: list[LLMRequest]) -> None:
        first = batch[0]
        kind = first.engine_kind
        tried = set().union(*(self._tried.get(r.seq, set()) for r in batch))
        serving = self.registry.serving(kind, first.model)
        free = [e for e in serving if e.healthy and e.free > 0 and e.id not in tried]
        if not free:
            if any(e.healthy and e.id not in tried for e in serving):
                self._parked.append(batch)  # wait for an untried engine's slot
                return
            for request in batch:
                error: GatewayError = (
                    UpstreamError(f"every engine of {first.model!r} failed: {tried}")
                    if tried
                    else NoHealthyEngineError(
                        f"no healthy engine serves {first.model!r}"
                    )
                )
                self._fail_queued(request, error, popped=True)
            return
        router = self.routers[kind]
        candidates = [
            Candidate(
                i,
                e.id,
                load=e.inflight,
                capacity=e.free,
                tokens=e.inflight_tokens,
                signals={**e.signals, **colocation_signals(self.colocated(e))},
            )
            for i, e in enumerate(free)
        ]
        route = RouteRequest(
            key=first.headers.get("x-session-id"),
            item=first.body,
            prefix=first.prefix,
            tokens=first.tokens,
            headers=first.headers,
            kind=kind,
        )
        engine = free[router.route(route, candidates)[0]]
        tokens = sum(r.tokens for r in batch)
        self.registry.acquire(engine, tokens)
        now = time.monotonic()
        for request in batch:
            self.admission.left_queue(request.kind, dispatched=True)
            self.metrics.dispatched(request, engine.id, self.router_names[kind], now)
        if self.decisions is not None:
            self.decisions.dispatch(batch, engine, len(self.policy), now)
        if len(batch) == 1:
            future = self._futures.get(first.seq)
            if future is None or future.done():
                self.registry.release(engine, tokens)
            else:
                future.set_result(_Grant(engine=engine))
            return
        self.metrics.batch(len(batch))
        task = asyncio.get_running_loop().create_task(
            self._run_batch(batch, engine, tokens)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def colocated(self, engine: Engine) -> list[Engine]:
        """The engines of the other kind that share ``engine``'s device (none when
        it has no device label)."""
        device = engine.spec.device
        if device is None:
            return []
        return [
            e
            for e in self.registry.engines.values()
            if e.spec.device == device and e.kind != engine.kind
        ]

    def colocated_inflight(self, engine: Engine) -> int:
        """Requests in flight on the engines of the other kind sharing ``engine``'s
        device."""
        return sum(e.inflight for e in self.colocated(engine))

    def _fail_queued(
        self, request: LLMRequest, error: GatewayError, *, popped: bool = False
    ) -> None:
        if not popped and not self.policy.remove(request):
            return
        self.admission.left_queue(request.kind, dispatched=False)
        future = self._futures.get(request.seq)
        if future is not None and not future.done():
            future.set_exception(error)

    async def _timer_loop(self) -> None:
        """Wakes the pump when a policy's wait bound runs out; once a second fails
        requests that waited too long or whose engines all went away."""
        last_expiry = time.monotonic()
        while True:
            now = time.monotonic()
            delay = self.policy.wake_after(now)
            delay = 1.0 if delay is None else min(delay, 1.0)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(delay, 0.0005))
            except TimeoutError:
                pass
            now = time.monotonic()
            if now - last_expiry >= 1.0:
                last_expiry = now
                self._expire(now)
            self.wake()

    def _expire(self, now: float) -> None:
        limit = self.config.queue_timeout_s
        for request in self.policy.requests():
            engines = self.registry.serving(request.engine_kind, request.model)
            if not any(e.state in (HEALTHY, STARTING) for e in engines):
                self._fail_queued(
                    request,
                    NoHealthyEngineError(f"no healthy engine serves {request.model!r}"),
                )
            elif now - request.arrival > limit:
                self._fail_queued(
                    request,
                    QueueTimeoutError(f"waited more than {limit:g}s for an engine"),
                )
