"""Engine-reported signals: vLLM's Prometheus ``/metrics`` gauges, polled.

Routers that declare ``engine_metrics = True`` route on what the engines say about
themselves (requests waiting/running, KV-cache usage) rather than only on what the
gateway counted. :class:`MetricsPoller` reads ``GET {url}/metrics`` of every healthy
engine every ``interval_s`` and stores the gauges it knows in ``Engine.signals``;
an engine without ``/metrics`` simply has none (routers fall back to gateway counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from sage_core.llm.registry import EngineRegistry

logger = logging.getLogger(__name__)

#: vLLM gauge name (without the ``vllm:`` prefix) -> signal name
GAUGES = {
    "num_requests_running": "num_requests_running",
    "num_requests_waiting": "num_requests_waiting",
    "gpu_cache_usage_perc": "gpu_cache_usage_perc",
    "kv_cache_usage_perc": "gpu_cache_usage_perc",  # vLLM >= 0.10 name
    "num_preemptions_total": "num_preemptions_total",
}


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """The known vLLM gauges of a Prometheus text exposition, summed over labels."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0].removeprefix("vllm:")
        signal = GAUGES.get(name)
        if signal is None:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            out[signal] = out.get(signal, 0.0) + number
    return out


class MetricsPoller:
    """Keeps ``Engine.signals`` fresh for routers that read engine metrics."""

    def __init__(self, registry: EngineRegistry, interval_s: float = 0.1) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def poll_once(self, http: httpx.AsyncClient) -> None:
        async def one(engine: object) -> None:
            spec = engine.spec  # type: ignore[attr-defined]
            headers = (
                {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
            )
            try:
                resp = await http.get(
                    f"{spec.url}/metrics", headers=headers, timeout=1.0
                )
            except httpx.HTTPError:
                return
            if resp.status_code == 200:
                engine.signals = parse_vllm_metrics(resp.text)  # type: ignore[attr-defined]

        engines = [e for e in self.registry.engines.values() if e.healthy]
        await asyncio.gather(*(one(e) for e in engines))

    async def _loop(self, http: httpx.AsyncClient) -> None:
        while True:
            try:
                await self.poll_once(http)
            except Exception:  # a poll must never end the loop
                logger.exception("polling engine /metrics failed")
            await asyncio.sleep(self.interval_s)

    def start(self, http: httpx.AsyncClient) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(http))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
