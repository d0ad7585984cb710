"""The engine registry: which engines serve which models, and whether they can take work.

Engines come from the gateway config file, from ``POST /admin/engines`` (``sage engine
add``), or are launched as managed subprocesses. Each engine has a state:
``starting`` (not yet seen healthy), ``healthy``, ``down`` (health check or circuit
breaker) or ``draining`` (takes no new work; removed once idle). Active health checks
poll ``GET {url}/health``; dispatch failures feed a circuit breaker that takes an engine
out for ``cooldown_s`` before health checks may bring it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from sage_core.llm.engine_spec import EngineSpec, HealthConfig
from sage_core.llm.errors import ConfigError, NotFoundError

logger = logging.getLogger(__name__)

STARTING, HEALTHY, DOWN, DRAINING = "starting", "healthy", "down", "draining"


@dataclass(slots=True, eq=False)
class Engine:
    """One engine's live state (owned by the registry's event loop).

    ``served`` counts the requests it completed (each request of an embedding batch
    counts); ``retried`` counts the requests that failed on it before answering and
    went back to the queue for another engine.
    """

    spec: EngineSpec
    state: str = STARTING
    models: tuple[str, ...] = ()
    inflight: int = 0
    inflight_tokens: int = 0
    failures: int = 0
    open_until: float = 0.0
    last_error: str = ""
    served: int = 0
    retried: int = 0
    loading_until: float = 0.0
    on_stop: Callable[[], object] | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    signals: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def healthy(self) -> bool:
        return self.state == HEALTHY

    @property
    def free(self) -> int:
        return self.spec.max_inflight - self.inflight

    def describe(self) -> dict[str, Any]:
        return {
            **self.spec.to_dict(),
            "models": list(self.models or self.spec.models),
            "state": self.state,
            "inflight": self.inflight,
            "inflight_tokens": self.inflight_tokens,
            "served": self.served,
            "retried": self.retried,
            "failures": self.failures,
            "last_error": self.last_error,
        }


class EngineRegistry:
    """Engines by id, with health checks, circuit breaker and drain.

    Args:
        health: health-check and breaker settings.
        on_change: called (no arguments) whenever capacity may have changed: an
            engine came up, went down, or finished a request.
    """

    def __init__(
        self,
        *,
        health: HealthConfig | None = None,
        on_change: Callable[[], object] | None = None,
    ) -> None:
        self.health = health or HealthConfig()
        self.on_change = on_change or (lambda: None)
        self.engines: dict[str, Engine] = {}
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    # -- membership -------------------------------------------------------------
    def add(
        self,
        spec: EngineSpec,
        on_stop: Callable[[], object] | None = None,
        *,
        loading_until: float = 0.0,
    ) -> Engine:
        """Register an engine (state ``starting`` until its first good check).

        ``loading_until`` (monotonic time) lets a freshly launched engine fail health
        checks while it loads without being marked down.

        Raises:
            ConfigError: an engine with this id exists.
        """
        if spec.id in self.engines:
            raise ConfigError(
                f"engine {spec.id!r} is already registered; remove it first or "
                f"choose another id"
            )
        engine = Engine(
            spec=spec, models=spec.models, on_stop=on_stop, loading_until=loading_until
        )
        engine.idle.set()
        self.engines[spec.id] = engine
        if self._http is not None:
            asyncio.get_running_loop().create_task(self.check(engine))
        return engine

    def get(self, engine_id: str) -> Engine:
        try:
            return self.engines[engine_id]
        except KeyError:
            raise NotFoundError(
                f"no engine {engine_id!r}; registered: "
                f"{', '.join(sorted(self.engines)) or 'none'}",
                param="id",
            ) from None

    async def remove(
        self, engine_id: str, *, drain: bool = True, timeout_s: float = 60.0
    ) -> Engine:
        """Stop sending work to an engine and forget it; with ``drain`` wait (up to
        ``timeout_s``) for its in-flight requests first."""
        engine = self.get(engine_id)
        engine.state = DRAINING
        self.on_change()
        if drain and engine.inflight:
            try:
                await asyncio.wait_for(engine.idle.wait(), timeout_s)
            except TimeoutError:
                logger.warning(
                    "engine %s still had %d requests after %.0fs of drain",
                    engine_id,
                    engine.inflight,
                    timeout_s,
                )
        self.engines.pop(engine_id, None)
        if engine.on_stop is not None:
            await asyncio.to_thread(engine.on_stop)
        self.on_change()
        return engine

    def serving(self, engine_kind: str, model: str) -> list[Engine]:
        """Engines of a kind that list ``model`` (any state)."""
        return [
            e
            for e in self.engines.values()
            if e.kind == engine_kind and model in (e.models or e.spec.models)
        ]

    def models(self) -> dict[str, str]:
        """model -> engine kind, over every registered engine that is not draining."""
        found: dict[str, str] = {}
        for engine in self.engines.values():
            if engine.state == DRAINING:
                continue
            for model in engine.models or engine.spec.models:
                found.setdefault(model, engine.kind)
        return found

    # -- dispatch accounting -----------------------------------------------------
    def acquire(self, engine: Engine, tokens: int) -> None:
        engine.inflight += 1
        engine.inflight_tokens += tokens
        engine.idle.clear()

    def release(self, engine: Engine, tokens: int) -> None:
        engine.inflight -= 1
        engine.inflight_tokens -= tokens
        if engine.inflight == 0:
            engine.idle.set()
        self.on_change()

    def record_success(self, engine: Engine, *, served: int = 1) -> None:
        """The engine answered; ``served`` requests were completed by it."""
        engine.failures = 0
        engine.served += served

    def record_retry(self, engine: Engine) -> None:
        """A request that failed on the engine goes to another one."""
        engine.retried += 1

    def record_failure(self, engine: Engine, error: str, *, trip: bool = False) -> None:
        """Count a failure; at ``health.failures`` in a row (or at once with ``trip``,
        e.g. connection refused) the breaker opens and the engine goes down."""
        engine.failures += 1
        engine.last_error = error
        if engine.state == DRAINING:
            return
        if trip or engine.failures >= self.health.failures:
            if engine.state != DOWN:
                logger.warning("engine %s is down: %s", engine.id, error)
            engine.state = DOWN
            engine.open_until = time.monotonic() + self.health.cooldown_s
            self.on_change()

    # -- health checks ------------------------------------------------------------
    async def check(self, engine: Engine) -> bool:
        """One health check; updates the engine's state. Returns True when healthy."""
        assert self._http is not None
        headers = (
            {"Authorization": f"Bearer {engine.spec.api_key}"}
            if engine.spec.api_key
            else {}
        )
        try:
            resp = await self._http.get(
                f"{engine.spec.url}/health",
                headers=headers,
                timeout=self.health.timeout_s,
            )
            ok = resp.status_code == 200
            error = "" if ok else f"GET /health answered {resp.status_code}"
            if ok and not engine.spec.models and not engine.models:
                engine.models = await self._discover(engine, headers)
        except (httpx.HTTPError, ValueError) as exc:
            ok, error = False, f"health check failed: {type(exc).__name__}: {exc}"
        if engine.state == DRAINING:
            return ok
        if ok:
            if engine.state == DOWN and time.monotonic() < engine.open_until:
                return False  # breaker still open
            if engine.state != HEALTHY:
                logger.info("engine %s is healthy", engine.id)
                engine.state = HEALTHY
                engine.failures = 0
                self.on_change()
            return True
        if engine.state == STARTING and time.monotonic() < engine.loading_until:
            engine.last_error = error  # still loading
            return False
        self.record_failure(engine, error, trip=engine.state == STARTING)
        return False

    async def _discover(
        self, engine: Engine, headers: dict[str, str]
    ) -> tuple[str, ...]:
        assert self._http is not None
        resp = await self._http.get(
            f"{engine.spec.url}/v1/models",
            headers=headers,
            timeout=self.health.timeout_s,
        )
        resp.raise_for_status()
        data = resp.json().get("data", [])
        models = tuple(str(m["id"]) for m in data if isinstance(m, dict) and "id" in m)
        if not models:
            raise ValueError(f"{engine.spec.url}/v1/models lists no model")
        return models

    async def _loop(self) -> None:
        while True:
            engines = list(self.engines.values())
            if engines:
                await asyncio.gather(
                    *(self.check(e) for e in engines), return_exceptions=True
                )
            await asyncio.sleep(self.health.interval_s)

    async def start(self, http: httpx.AsyncClient) -> None:
        """Check every engine once, then keep checking in the background."""
        self._http = http
        await asyncio.gather(
            *(self.check(e) for e in self.engines.values()), return_exceptions=True
        )
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self, *, drain_timeout_s: float = 30.0) -> None:
        """Stop checking; wait for in-flight work (bounded), stop managed engines."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.drain_all(drain_timeout_s)
        for engine in list(self.engines.values()):
            if engine.on_stop is not None:
                await asyncio.to_thread(engine.on_stop)
                engine.on_stop = None

    async def drain_all(self, timeout_s: float) -> None:
        busy = [e.idle.wait() for e in self.engines.values() if e.inflight]
        if busy:
            try:
                await asyncio.wait_for(asyncio.gather(*busy), timeout_s)
            except TimeoutError:
                logger.warning(
                    "shutdown: requests still in flight after %.0fs", timeout_s
                )

    def describe(self) -> list[dict[str, Any]]:
        return [e.describe() for e in sorted(self.engines.values(), key=lambda e: e.id)]

    def health_report(self) -> dict[str, Any]:
        """What ``GET /health`` answers.

        ``status`` is ``ok`` when every engine is healthy, ``degraded`` when some
        engine is not (listed in ``down_engines``) but every model still has a
        healthy engine, and ``unavailable`` when a model has none (listed in
        ``unavailable_models``) or no engine serves any model.
        """
        models = self.models()
        unavailable = sorted(
            model
            for model, kind in models.items()
            if not any(e.healthy for e in self.serving(kind, model))
        )
        down = [
            {"id": e.id, "state": e.state, "last_error": e.last_error}
            for e in sorted(self.engines.values(), key=lambda e: e.id)
            if e.state in (STARTING, DOWN)
        ]
        if unavailable or not models:
            status = "unavailable"
        else:
            status = "degraded" if down else "ok"
        return {
            "status": status,
            "healthy_engines": sorted(e.id for e in self.engines.values() if e.healthy),
            "down_engines": down,
            "unavailable_models": unavailable,
            "engines": len(self.engines),
        }
