"""Runs of the RAG benchmark: the workload, arrivals over time, SAGE and the loops.

Queries arrive on a schedule (offsets in seconds from the run's start: Poisson at a
given rate, or all at once for ``burst``); every query's latency is the time from its
own arrival to its answer. The loops get the same schedule: they wait for the next
arrival when idle and take what has arrived (up to their batch) when busy.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

STAGES = ("embed", "retrieve", "refine", "prompt", "generate")
_perf = time.perf_counter


def offsets(n: int, rate: float | None, seed: int) -> list[float]:
    """Arrival offsets of `n` queries: Poisson at `rate` per second, or 0 (burst)."""
    if rate is None:
        return [0.0] * n
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def arrivals(queries: list[dict[str, Any]], at: list[float]) -> Any:
    """Source: each query when its offset has passed, stamped with its arrival."""
    start = _perf()
    for query, offset in zip(queries, at, strict=True):
        due = start + offset
        wait = due - _perf()
        if wait > 0:
            time.sleep(wait)
        yield {**query, "t_arr": due}


def stamp_out(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "t_done": _perf()}


class Setup:
    """The shared pieces: collection, questions, engine and stage configs."""

    def __init__(self, args: argparse.Namespace, root: str, llm: dict[str, Any]):
        from sage_plugins.demo.corpus import questions_path

        base = [json.loads(x) for x in questions_path().read_text().splitlines()]
        self.queries = [
            {"query": f"{q['query']} (case {n})", "n": n}
            for n, q in enumerate(base * (args.queries // len(base) + 1))
        ][: args.queries]
        self.root = root
        self.llm = llm
        self.args = args
        self.tokenizer = args.tokenizer

    def configs(self, batch: int) -> dict[str, dict[str, Any]]:
        a = self.args
        return {
            "embed": {"field": "query", "batch_size": batch, "max_wait_ms": 5},
            "retrieve": {"collection": "bench", "root": self.root, "top_k": 4},
            "refine": {"budget_tokens": 160, "tokenizer": self.tokenizer},
            "prompt": {"max_prompt_tokens": 320, "tokenizer": self.tokenizer},
            "generate": {
                "backend_config": self.llm,
                "max_tokens": a.max_tokens,
                "stream": True,
                "params": {"ignore_eos": True},
                "batch_size": a.generate_batch,
            },
        }


def index(root: str) -> int:
    """Index the demo corpus into collection ``bench`` under `root`; return chunks."""
    from sage_core.api import LocalEnvironment
    from sage_plugins.demo.corpus import corpus_path

    env = LocalEnvironment("bench-index")
    (
        env.from_source("jsonl-documents", path=str(corpus_path()))
        .flat_map("chunk", max_tokens=160)
        .map("embed", batch_size=64)
        .sink("index-writer", collection="bench", root=root)
    )
    return int(sum(env.execute().results["index-writer"]))


def run_sage(setup: Setup, env: Any, batch: int, at: list[float]) -> dict[str, Any]:
    """The pipeline on a SAGE environment, queries arriving at offsets `at`."""
    cfg = setup.configs(batch)
    stream = env.from_source(arrivals, queries=setup.queries, at=at, name="queries")
    for stage in STAGES:
        replicas = setup.args.generate_parallelism if stage == "generate" else 1
        stream = stream.map(stage, parallelism=replicas, **cfg[stage])
    stream.map(stamp_out, name="done").collect()
    result = env.execute(timeout=1800)
    answers = result.collected()
    if len(answers) != len(setup.queries) or result.dead_letters:
        raise SystemExit(f"{env.name}: {len(answers)} of {len(setup.queries)} answered")
    ops = result.metrics["operators"]
    stages = {
        s: {
            k: 1000 * ops[s][f"{k}_s"] / max(ops[s]["items_in"], 1)
            for k in ("service", "queue_wait", "blocked")
        }
        for s in STAGES
    }
    first = min(a["t_arr"] for a in answers)
    return {
        "wall_s": max(a["t_done"] for a in answers) - first,
        "latencies": [a["t_done"] - a["t_arr"] for a in answers],
        "generation": [a["generation"] for a in answers],
        "stages": stages,
    }


def run_loop(
    setup: Setup, batch: int, parallel: int, at: list[float]
) -> dict[str, Any]:
    """The same stage objects in a loop: take the arrived queries (up to `batch`),
    run the stages, generate in chunks of the contract's batch on `parallel` threads
    (one generate instance each: SAGE's replicas x batch requests in flight)."""
    from sage_core.functions import OperatorContext
    from sage_plugins.rag import OPERATORS

    cfg = setup.configs(batch)
    ops = [OPERATORS[s][0](**cfg[s]) for s in STAGES[:-1]]
    gens = [OPERATORS["generate"][0](**cfg["generate"]) for _ in range(parallel)]
    for op in [*ops, *gens]:
        op.open(OperatorContext(type(op).__name__))
    pool = ThreadPoolExecutor(parallel)
    step = setup.args.generate_batch

    def generate(g: int, chunks: list[list[Any]]) -> list[Any]:
        return [out for chunk in chunks for out in gens[g].map_batch(chunk)]

    try:
        latencies: list[float] = []
        generation: list[dict[str, Any]] = []
        start = _perf()
        due = [start + a for a in at]
        i, n = 0, len(setup.queries)
        while i < n:
            if due[i] > _perf():
                time.sleep(due[i] - _perf())
            now = _perf()
            j = i + 1
            while j < n and j - i < batch and due[j] <= now:
                j += 1
            items = [
                {**q, "t_arr": due[k]} for k, q in enumerate(setup.queries[i:j], i)
            ]
            i = j
            for op in ops:
                items = op.map_batch(items)
            chunks = [items[k : k + step] for k in range(0, len(items), step)]
            shares = [chunks[g::parallel] for g in range(parallel)]
            done = pool.map(generate, range(parallel), shares)
            items = [out for part in done for out in part]
            now = _perf()
            latencies += [now - it["t_arr"] for it in items]
            generation += [it["generation"] for it in items]
        wall = _perf() - start
    finally:
        pool.shutdown()
        for op in [*ops, *gens]:
            op.close()
    return {"wall_s": wall, "latencies": latencies, "generation": generation}
