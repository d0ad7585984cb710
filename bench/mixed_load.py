"""Open-loop load of the mixed-workload benchmark: a Poisson plan and its replay.

``schedule`` draws a plan (arrival offset, class, text, SLO) with a fixed seed, so every
configuration of ``bench/mixed_bench.py`` replays the same arrivals; ``run_once``
fires each request at its offset, whatever happened to the earlier ones, and
reports per-class p50/p99 latency, SLO compliance and throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from typing import Any

from sage_core.llm.http1 import HTTPError, Pool

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "judge",
]


Plan = list[tuple[float, str, str, float]]


def schedule(
    rate: float,
    seconds: float,
    llm_share: float,
    seed: int,
    slos: dict[str, list[float]],
) -> Plan:
    """(arrival offset s, class, text, SLO ms) with Poisson arrivals; each request's
    objective is drawn from its class's list."""
    rng = random.Random(seed)
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        kind = "llm" if rng.random() < llm_share else "embedding"
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
        out.append((t, kind, text, rng.choice(slos[kind])))


async def one(
    pool: Pool,
    kind: str,
    text: str,
    slo: float,
    args: argparse.Namespace,
    model: dict[str, str],
) -> tuple[float, int]:
    if kind == "llm":
        path = "/v1/completions"
        body = {
            "model": model["llm"],
            "prompt": text,
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
    else:
        path = "/v1/embeddings"
        body = {"model": model["embedding"], "input": text}
    headers = {"Content-Type": "application/json", "X-SLO-Deadline-Ms": str(slo)}
    start = time.perf_counter()
    resp = await pool.request(
        "POST", path, json.dumps(body).encode(), headers, timeout_s=300
    )
    await resp.aread()
    return (time.perf_counter() - start) * 1000.0, resp.status_code


async def run_once(
    plan: Plan,
    urls: dict[str, str],
    args: argparse.Namespace,
    model: dict[str, str],
) -> dict[str, Any]:
    pools = {
        kind: Pool(url, max_idle=512, connect_timeout_s=60.0)
        for kind, url in urls.items()
    }
    results: list[tuple[str, float, int, float]] = []

    async def fire(offset: float, kind: str, text: str, slo: float) -> None:
        await asyncio.sleep(max(0.0, begin + offset - time.perf_counter()))
        try:
            ms, status = await one(pools[kind], kind, text, slo, args, model)
        except (
            HTTPError,
            OSError,
            ValueError,
        ) as exc:  # counted as failed, never dropped
            print(f"request failed: {exc!r}", file=sys.stderr)
            ms, status = float("nan"), 0
        results.append((kind, ms, status, slo))

    begin = time.perf_counter()
    await asyncio.gather(*(fire(*row) for row in plan))
    elapsed = time.perf_counter() - begin
    for pool in pools.values():
        pool.close()
    out: dict[str, Any] = {"elapsed_s": elapsed}
    met_all = total_all = 0
    for kind in ("llm", "embedding"):
        rows = [(ms, st, slo) for k, ms, st, slo in results if k == kind]
        ok = sorted(ms for ms, st, _ in rows if st == 200)
        met = sum(1 for ms, st, slo in rows if st == 200 and ms <= slo)
        met_all += met
        total_all += len(rows)
        out[kind] = {
            "requests": len(rows),
            "ok": len(ok),
            "p50_ms": statistics.median(ok) if ok else None,
            "p99_ms": ok[min(len(ok) - 1, max(0, round(0.99 * len(ok)) - 1))]
            if ok
            else None,
            "slo_compliance": met / len(rows) if rows else None,
            "throughput_rps": len(ok) / elapsed,
        }
    out["slo_compliance"] = met_all / total_all if total_all else None
    out["throughput_rps"] = sum(out[k]["ok"] for k in ("llm", "embedding")) / elapsed
    return out
