"""Overload of a real ``sage gateway`` process: 429 with Retry-After, no memory growth."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import psutil
import pytest

CHAT = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 3,
}


async def _round(url: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=CHAT) for _ in range(n)),
            return_exceptions=True,
        )
    # this busy client may lose a rare connection; every answer must be 200 or 429
    lost = [a for a in answers if isinstance(a, httpx.TransportError)]
    assert len(lost) <= n // 100, lost
    return [a for a in answers if isinstance(a, httpx.Response)]


@pytest.mark.slow
def test_overload_is_refused_without_memory_growth(
    engine_double, processes, sage_cmd, free_port, wait_for, tmp_path
) -> None:
    engine = engine_double("tiny", token_delay_s=0.002)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "engines": [engine.spec("a", max_inflight=2)],
                "queue_limits": {"chat": 16},
                # the engine double shares this busy test process: lenient checks
                "health": {"timeout_s": 15, "failures": 5},
            }
        )
    )
    port = free_port()
    proc = processes.start(
        [
            *sage_cmd,
            "gateway",
            "--port",
            str(port),
            "--config",
            str(config),
            "--log-level",
            "warning",
        ],
        "gateway",
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(url + "/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 60, "the gateway to serve")
    gateway = psutil.Process(proc.pid)
    rss = []
    for _ in range(6):
        answers = asyncio.run(_round(url, 400))
        statuses = {r.status_code for r in answers}
        assert statuses <= {200, 429}, [r.text for r in answers if r.status_code > 429]
        refused = [r for r in answers if r.status_code == 429]
        assert refused and all(int(r.headers["retry-after"]) >= 1 for r in refused)
        assert refused[0].json()["error"]["code"] == "queue_full"
        time.sleep(0.5)
        rss.append(gateway.memory_info().rss)
    # after the first (warm-up) round the gateway's memory stays flat
    assert max(rss[1:]) - rss[1] < 16 * 2**20, [r // 2**20 for r in rss]
    metrics = httpx.get(url + "/admin/metrics").json()
    assert metrics["queued"]["chat"] == 0 and metrics["active_requests"] == 0
    assert metrics["by_status"]["queue_full"] >= 6
