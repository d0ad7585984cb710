"""Open-loop load for the emulated mixed-workload experiment (``mixed_emu_bench.py``).

``plan`` draws arrivals with a fixed seed — Poisson, or bursty on/off (a quarter of
each ``period_s`` at 3.25x the mean rate, the rest at 0.25x: same mean rate) — and
per request its class, sizes and SLO; every configuration replays the same plan.
``replay`` fires each request at its offset whatever happened to the earlier ones
(requests are never dropped: failures are counted) and ``stats`` reports per class
p50/p95/p99 latency, SLO attainment, goodput and LLM tokens/s.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from mixed_load import WORDS  # the same prompt vocabulary as the real-CPU run

from sage_core.llm.http1 import HTTPError, Pool

ON_FRACTION, ON_MULT, OFF_MULT = 0.25, 3.25, 0.25


@dataclass(frozen=True, slots=True)
class Req:
    at: float
    kind: str  # "llm" or "embedding"
    words: int  # per input (embedding) or prompt (llm)
    inputs: int
    max_tokens: int
    slo_ms: float


@dataclass(frozen=True, slots=True)
class Workload:
    llm_prompt_words: int = 300  # median; lognormal sigma 0.6, capped at 4x
    llm_output: tuple[int, int] = (64, 192)
    emb_inputs: int = 4
    emb_words: int = 96
    llm_slo_ms: float = 4000.0
    emb_slo_ms: float = 150.0
    period_s: float = 2.0


def plan(
    rate: float, seconds: float, llm_share: float, pattern: str, seed: int, w: Workload
) -> list[Req]:
    """Arrivals at mean ``rate``/s for ``seconds``: ``poisson`` or ``bursty``."""
    rng = random.Random(seed)
    out: list[Req] = []
    t = 0.0
    peak = rate * (ON_MULT if pattern == "bursty" else 1.0)
    while True:
        t += rng.expovariate(peak)  # thinning of a peak-rate Poisson process
        if t >= seconds:
            return out
        if pattern == "bursty":
            on = (t % w.period_s) < ON_FRACTION * w.period_s
            if rng.random() >= (ON_MULT if on else OFF_MULT) / ON_MULT:
                continue
        if rng.random() < llm_share:
            words = min(
                4 * w.llm_prompt_words,
                round(rng.lognormvariate(0, 0.6) * w.llm_prompt_words),
            )
            out.append(
                Req(
                    t, "llm", max(8, words), 1, rng.randint(*w.llm_output), w.llm_slo_ms
                )
            )
        else:
            out.append(Req(t, "embedding", w.emb_words, w.emb_inputs, 0, w.emb_slo_ms))


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def body(req: Req, models: dict[str, str], seed: int) -> tuple[str, bytes]:
    rng = random.Random(seed)
    if req.kind == "llm":
        data: dict[str, Any] = {
            "model": models["llm"],
            "prompt": _text(rng, req.words),
            "max_tokens": req.max_tokens,
            "ignore_eos": True,
        }
        return "/v1/completions", json.dumps(data).encode()
    data = {
        "model": models["embedding"],
        "input": [_text(rng, req.words) for _ in range(req.inputs)],
        "dimensions": 256,  # a smaller payload spares the shared CPU; timing unchanged
    }
    return "/v1/embeddings", json.dumps(data).encode()


async def replay(
    requests: list[Req],
    targets: dict[str, list[str]],
    models: dict[str, str],
    scale: float = 1.0,
) -> list[tuple[Req, float, int, float]]:
    """(request, latency ms, status, finish offset s) per request, in emulated time
    (wall time / ``scale``, the emulator's ``time_scale``). ``targets``: URLs per
    class; several URLs are used in turn (a client-side load balancer)."""
    pools = {
        url: Pool(url, max_idle=1024, connect_timeout_s=30.0)
        for urls in targets.values()
        for url in urls
    }
    turn = {kind: 0 for kind in targets}
    bodies = [body(r, models, i) for i, r in enumerate(requests)]
    results: list[tuple[Req, float, int, float]] = []

    async def fire(i: int, req: Req) -> None:
        urls = targets[req.kind]
        url = urls[turn[req.kind] % len(urls)]
        turn[req.kind] += 1
        await asyncio.sleep(max(0.0, begin + req.at * scale - time.perf_counter()))
        path, payload = bodies[i]
        headers = {
            "Content-Type": "application/json",
            # the objective in wall time, as the gateway's clock runs
            "X-SLO-Deadline-Ms": str(req.slo_ms * scale),
        }
        if req.kind == "embedding":
            headers["X-Request-Priority"] = "high"
        start = time.perf_counter()
        try:
            resp = await pools[url].request(
                "POST", path, payload, headers, timeout_s=120
            )
            await resp.aread()
            status = resp.status_code
        except (HTTPError, OSError, ValueError) as exc:  # counted as failed
            print(f"request failed: {exc!r}", file=sys.stderr)
            status = 0
        end = time.perf_counter()
        results.append(
            (req, (end - start) * 1000.0 / scale, status, (end - begin) / scale)
        )

    begin = time.perf_counter()
    await asyncio.gather(*(fire(i, r) for i, r in enumerate(requests)))
    for pool in pools.values():
        pool.close()
    return results


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def stats(
    results: list[tuple[Req, float, int, float]], seconds: float
) -> dict[str, Any]:
    """Per class and overall figures of one replay (``seconds``: the plan's span)."""
    out: dict[str, Any] = {}
    met_all = 0
    span = max([seconds, *(end for *_, end in results)])
    for kind in ("llm", "embedding"):
        rows = [(r, ms, st) for r, ms, st, _ in results if r.kind == kind]
        ok = [ms for _, ms, st in rows if st == 200]
        met = sum(1 for r, ms, st in rows if st == 200 and ms <= r.slo_ms)
        met_all += met
        out[kind] = {
            "requests": len(rows),
            "ok": len(ok),
            "p50_ms": statistics.median(ok) if ok else None,
            "p95_ms": _pct(ok, 0.95),
            "p99_ms": _pct(ok, 0.99),
            "slo_attainment": met / len(rows) if rows else None,
            "goodput_rps": met / span,
        }
    tokens = sum(
        r.max_tokens for r, _, st, _ in results if r.kind == "llm" and st == 200
    )
    out["llm"]["tokens_per_s"] = tokens / span
    out["slo_attainment"] = met_all / len(results) if results else None
    out["goodput_rps"] = met_all / span
    out["failed"] = sum(1 for _, _, st, _ in results if st != 200)
    return out
