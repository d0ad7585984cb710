"""Metrics measured at the gateway: latency percentiles, TTFT, inter-token latency,
tokens/s, queue time, SLO compliance per class and priority, routing decisions and
engine health.

Two views of the same measurements: Prometheus series named ``sage_llm_*`` in a
registry owned by this object (``GET /metrics``), and exact recent percentiles from
bounded reservoirs (``GET /admin/metrics`` as JSON). Memory is bounded: reservoirs keep
the last ``window`` samples, label sets are finite (class, priority, engine, status).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from sage_core.llm.classify import LLMRequest
    from sage_core.llm.registry import EngineRegistry

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def percentiles(samples: deque[float] | list[float]) -> dict[str, float | None]:
    """p50/p95/p99 (nearest rank, in ms) and the count of a sample of seconds."""
    if not samples:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "count": 0}
    ordered = sorted(samples)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] * 1000.0

    return {
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "mean": sum(ordered) / n * 1000.0,
        "count": n,
    }


class GatewayMetrics:
    """Counters, histograms and reservoirs of one gateway.

    Args:
        window: samples kept per reservoir for exact percentiles.
        rate_window_s: horizon of tokens/s and requests/s.
    """

    def __init__(self, *, window: int = 4096, rate_window_s: float = 60.0) -> None:
        self.registry = CollectorRegistry()
        self.window = window
        self.rate_window_s = rate_window_s
        self.started = time.monotonic()
        r = self.registry
        self.requests = Counter(
            "sage_llm_requests",
            "Finished requests",
            ["cls", "priority", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "sage_llm_request_latency_seconds",
            "End-to-end latency at the gateway",
            ["cls", "priority"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "sage_llm_queue_time_seconds",
            "Time between admission and dispatch",
            ["cls"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "sage_llm_ttft_seconds",
            "Time to first token (streamed requests)",
            ["cls"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "sage_llm_itl_seconds",
            "Inter-token latency (streamed requests)",
            ["cls"],
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "sage_llm_tokens", "Tokens processed", ["cls", "direction"], registry=r
        )
        self.slo = Counter(
            "sage_llm_slo",
            "Requests with a deadline, by outcome",
            ["cls", "priority", "outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "sage_llm_rejected",
            "Requests refused before queueing",
            ["cls", "reason"],
            registry=r,
        )
        self.routing = Counter(
            "sage_llm_routing_decisions",
            "Engine choices by router",
            ["engine", "router"],
            registry=r,
        )
        self.retries = Counter(
            "sage_llm_retries",
            "Failovers to another engine before the first byte",
            ["engine"],
            registry=r,
        )
        self.batches = Histogram(
            "sage_llm_embedding_batch_size",
            "Requests merged into one embedding call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.queue_depth = Gauge(
            "sage_llm_queue_depth", "Requests waiting per class", ["cls"], registry=r
        )
        self.engine_healthy = Gauge(
            "sage_llm_engine_healthy",
            "1 when the engine takes work",
            ["engine", "kind"],
            registry=r,
        )
        self.engine_inflight = Gauge(
            "sage_llm_engine_inflight",
            "Requests in flight per engine",
            ["engine"],
            registry=r,
        )
        self._lat: dict[str, deque[float]] = defaultdict(self._reservoir)
        self._queue: dict[str, deque[float]] = defaultdict(self._reservoir)
        self._ttft: dict[str, deque[float]] = defaultdict(self._reservoir)
        self._itl: dict[str, deque[float]] = defaultdict(self._reservoir)
        self._slo: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        self._status: dict[str, int] = defaultdict(int)
        self._routes: dict[str, int] = defaultdict(int)
        self._done: deque[tuple[float, int]] = deque(maxlen=65536)
        self.active = 0
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _reservoir(self) -> deque[float]:
        return deque(maxlen=self.window)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, memoised (label sets are few and fixed)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- events ---------------------------------------------------------------------
    def rejected_request(self, cls: str, reason: str) -> None:
        self._child(self.rejected, cls, reason).inc()
        self._status[reason] += 1

    def dispatched(
        self, request: LLMRequest, engine: str, router: str, now: float
    ) -> None:
        wait = max(0.0, now - request.arrival)
        self._child(self.queue_time, request.kind).observe(wait)
        self._queue[request.kind].append(wait)
        self._child(self.routing, engine, router).inc()
        self._routes[engine] += 1

    def batch(self, size: int) -> None:
        self.batches.observe(size)

    def retry(self, engine: str) -> None:
        self._child(self.retries, engine).inc()

    def first_token(self, request: LLMRequest, at: float) -> None:
        value = max(0.0, at - request.arrival)
        self._child(self.ttft, request.kind).observe(value)
        self._ttft[request.kind].append(value)

    def inter_token(self, kind: str, gap: float) -> None:
        self._child(self.itl, kind).observe(gap)
        self._itl[kind].append(gap)

    def finished(
        self,
        request: LLMRequest,
        status: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        now: float | None = None,
    ) -> None:
        """Record a request that left the gateway (``status``: ok, error, cancelled,
        or an HTTP error code name)."""
        now = time.monotonic() if now is None else now
        elapsed = max(0.0, now - request.arrival)
        prio = str(request.priority)
        self._child(self.requests, request.kind, prio, status).inc()
        self._status[status] += 1
        if status == "ok":
            self._child(self.latency, request.kind, prio).observe(elapsed)
            self._lat[request.kind].append(elapsed)
            self._child(self.tokens, request.kind, "prompt").inc(prompt_tokens)
            self._child(self.tokens, request.kind, "completion").inc(completion_tokens)
            self._done.append((now, prompt_tokens + completion_tokens))
        if request.slo_ms is not None and status != "cancelled":
            met = status == "ok" and elapsed * 1000.0 <= request.slo_ms
            self._child(self.slo, request.kind, prio, "met" if met else "missed").inc()
            self._slo[(request.kind, request.priority)][0 if met else 1] += 1

    # -- views ----------------------------------------------------------------------
    def refresh_gauges(self, registry: EngineRegistry, depths: dict[str, int]) -> None:
        for cls, depth in depths.items():
            self._child(self.queue_depth, cls).set(depth)
        for engine in registry.engines.values():
            self._child(self.engine_healthy, engine.id, engine.kind).set(
                1 if engine.healthy else 0
            )
            self._child(self.engine_inflight, engine.id).set(engine.inflight)

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)

    def _rates(self, now: float) -> tuple[float, float]:
        horizon = min(self.rate_window_s, max(1e-9, now - self.started))
        recent = [(t, n) for t, n in self._done if t >= now - horizon]
        return len(recent) / horizon, sum(n for _, n in recent) / horizon

    def snapshot(self) -> dict[str, Any]:
        """Everything as JSON-friendly data (``GET /admin/metrics``)."""
        now = time.monotonic()
        rps, tps = self._rates(now)
        all_lat = [v for d in self._lat.values() for v in d]
        overall = percentiles(all_lat)
        slo: dict[str, dict[str, Any]] = {}
        met_total = missed_total = 0
        for (cls, prio), (met, missed) in sorted(self._slo.items()):
            met_total += met
            missed_total += missed
            slo.setdefault(cls, {})[str(prio)] = {
                "met": met,
                "missed": missed,
                "compliance": met / (met + missed),
            }
        completed = self._status.get("ok", 0)
        total = sum(self._status.values()) + self.active
        return {
            "total_requests": total,
            "completed_requests": completed,
            "active_requests": self.active,
            "failed_requests": total - completed - self.active,
            "avg_latency_ms": overall["mean"],
            "p50_latency_ms": overall["p50"],
            "p95_latency_ms": overall["p95"],
            "p99_latency_ms": overall["p99"],
            "tokens_per_second": tps,
            "requests_per_second": rps,
            "slo_violations": missed_total,
            "slo_compliance_rate": (
                met_total / (met_total + missed_total)
                if met_total + missed_total
                else None
            ),
            "by_status": dict(self._status),
            "latency_ms": {cls: percentiles(d) for cls, d in self._lat.items()},
            "queue_time_ms": {cls: percentiles(d) for cls, d in self._queue.items()},
            "ttft_ms": {cls: percentiles(d) for cls, d in self._ttft.items()},
            "itl_ms": {cls: percentiles(d) for cls, d in self._itl.items()},
            "slo": slo,
            "routing": dict(self._routes),
        }
