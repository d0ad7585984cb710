"""RAG benchmark: the RAG pipeline on SAGE's runtimes against the same stages in a loop.

Workload: SAGE's documentation (the demo corpus) indexed once with the packaged
all-MiniLM-L6-v2; then --queries questions flow through embed -> retrieve -> refine ->
prompt -> generate (streamed, --max-tokens tokens each, ``ignore_eos`` so every answer
has the same length) against a real vLLM OpenAI server (the tiny local model, started
here unless --llm-url is given). Rows, measured in the same run:

* ``sage-local`` with the embed batch size swept (--batch-sizes): the local runtime,
  generate with --generate-parallelism replicas of --generate-batch requests each;
* ``sage-dask``: the same pipeline as actors on a 2-worker in-process LocalCluster
  (when the Dask runtime is installed; otherwise the JSON says it was not);
* ``loop-per-item``: the same stage objects called one query at a time in a for loop
  (no SAGE); ``loop-batched``: the same loop over batches of the largest embed batch
  size, generate called on chunks of --generate-batch (its contract batch size).

Per row: queries/s, p50/p99 end-to-end latency per query (all queries arrive at once:
latency = time from the run's start to the query's answer), TTFT/TBT p50, and for SAGE
rows the per-stage split (service / queue-wait / blocked, ms per item). Medians of
--repeats runs, interleaved across rows. Writes JSON (--out) and a PNG next to it.

    python bench/rag_bench.py --out bench/results/rag.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGES = ("embed", "retrieve", "refine", "prompt", "generate")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stamp_in(item: dict[str, Any]) -> dict[str, Any]:
    return item


def stamp_out(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "t_done": time.perf_counter()}


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


def run_sage(setup: Setup, env: Any, batch: int) -> dict[str, Any]:
    cfg = setup.configs(batch)
    stream = env.from_collection(setup.queries)
    for stage in STAGES:
        replicas = setup.args.generate_parallelism if stage == "generate" else 1
        stream = stream.map(stage, parallelism=replicas, **cfg[stage])
    stream.map(stamp_out, name="done").collect()
    start = time.perf_counter()
    result = env.execute(timeout=1800)
    wall = time.perf_counter() - start
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
    return {
        "wall_s": wall,
        "latencies": [a["t_done"] - start for a in answers],
        "generation": [a["generation"] for a in answers],
        "stages": stages,
    }


def run_loop(setup: Setup, batch: int) -> dict[str, Any]:
    from sage_core.functions import OperatorContext
    from sage_plugins.rag import OPERATORS

    cfg = setup.configs(batch)
    ops = [OPERATORS[s][0](**cfg[s]) for s in STAGES]
    for op in ops:
        op.open(OperatorContext(type(op).__name__))
    try:
        latencies: list[float] = []
        generation: list[dict[str, Any]] = []
        start = time.perf_counter()
        step = setup.args.generate_batch  # generate's batch, as in its contract
        for i in range(0, len(setup.queries), batch):
            items = setup.queries[i : i + batch]
            for op in ops[:-1]:
                items = op.map_batch(items)
            items = [
                out
                for k in range(0, len(items), step)
                for out in ops[-1].map_batch(items[k : k + step])
            ]
            now = time.perf_counter()
            latencies += [now - start] * len(items)
            generation += [it["generation"] for it in items]
        wall = time.perf_counter() - start
    finally:
        for op in ops:
            op.close()
    return {"wall_s": wall, "latencies": latencies, "generation": generation}


def summarise(name: str, runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    def med(fn: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(fn(r) for r in runs)

    row: dict[str, Any] = {
        "system": name,
        "repeats": len(runs),
        "queries_per_s": med(lambda r: n / r["wall_s"]),
        "p50_s": med(lambda r: pct(r["latencies"], 0.5)),
        "p99_s": med(lambda r: pct(r["latencies"], 0.99)),
        "ttft_p50_ms": med(
            lambda r: 1000 * pct([g["ttft_s"] for g in r["generation"]], 0.5)
        ),
        "tbt_p50_ms": med(
            lambda r: 1000 * pct([g["tbt_s"] for g in r["generation"]], 0.5)
        ),
    }
    if "stages" in runs[0]:
        row["stages_ms_per_item"] = {
            s: {
                k: med(lambda r, s=s, k=k: r["stages"][s][k])
                for k in runs[0]["stages"][s]
            }
            for s in STAGES
        }
    return row


def dask_environment() -> Any:
    try:
        from sage_core.api.dask_environment import DaskEnvironment
    except ImportError:
        return None
    return DaskEnvironment


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["system"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.barh(names, [r["queries_per_s"] for r in rows], color="tab:blue")
    ax1.set_xlabel("queries / s (median)")
    ax1.invert_yaxis()
    y = range(len(rows))
    ax2.barh([i - 0.2 for i in y], [r["p50_s"] for r in rows], 0.4, label="p50")
    ax2.barh([i + 0.2 for i in y], [r["p99_s"] for r in rows], 0.4, label="p99")
    ax2.set_yticks(list(y), names)
    ax2.invert_yaxis()
    ax2.set_xlabel("end-to-end latency per query, s (burst arrival)")
    ax2.legend()
    fig.suptitle("RAG pipeline: embed -> retrieve -> refine -> prompt -> generate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--generate-batch", type=int, default=8)
    parser.add_argument(
        "--generate-parallelism",
        type=int,
        default=2,
        help="generate replicas in the SAGE rows (each serves --generate-batch "
        "requests at once)",
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--llm-url", default=None)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json for budgets")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--out", default="bench/results/rag.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sage_core.api import LocalEnvironment
    from sage_core.common.settings import cache_dir
    from sage_plugins.engines.tiny_model import make_tiny_model
    from sage_plugins.engines.vllm_server import VLLMServer

    batches = [int(b) for b in args.batch_sizes.split(",")]
    server = None
    if args.llm_url is None:
        model = make_tiny_model(cache_dir() / "models" / "tiny")
        args.tokenizer = args.tokenizer or str(model)
        server = VLLMServer(model, served_model_name=args.model).start()
        args.llm_url = server.api_url
    llm = {"base_url": args.llm_url, "model": args.model}
    Dask = None if args.no_dask else dask_environment()
    dask_status = (
        "measured"
        if Dask is not None
        else "not measured: " + ("--no-dask" if args.no_dask else "no Dask runtime")
    )
    try:
        with tempfile.TemporaryDirectory() as root:
            chunks = index(root)
            setup = Setup(args, root, llm)
            n = len(setup.queries)
            plan: list[tuple[str, Callable[[], dict[str, Any]]]] = []
            for b in batches:
                plan.append(
                    (
                        f"sage-local (embed batch {b})",
                        lambda b=b: run_sage(setup, LocalEnvironment("rag"), b),
                    )
                )
            if Dask is not None:
                b = max(batches)

                def dask_run(b: int = b) -> dict[str, Any]:
                    env = Dask("rag", n_workers=2, threads_per_worker=2)
                    try:
                        return run_sage(setup, env, b)
                    finally:
                        close = getattr(env, "close", None)
                        if close:
                            close()

                plan.append((f"sage-dask 2 workers (embed batch {b})", dask_run))
            plan.append(("loop-per-item", lambda: run_loop(setup, 1)))
            plan.append(
                (
                    f"loop-batched ({max(batches)})",
                    lambda: run_loop(setup, max(batches)),
                )
            )
            run_loop(setup, max(batches))  # warm-up: models loaded, engine warm
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in plan}
            for rep in range(args.repeats):
                for name, fn in list(plan):
                    try:
                        runs[name].append(fn())
                    except Exception as exc:  # reported in the JSON
                        if not name.startswith("sage-dask"):
                            raise
                        dask_status = f"failed: {type(exc).__name__}: {exc}"[:500]
                        print(f"{name}: {dask_status}", file=sys.stderr)
                        plan = [(n, f) for n, f in plan if n != name]
                        del runs[name]
                        continue
                    print(f"repeat {rep + 1}/{args.repeats}: {name}", file=sys.stderr)
            rows = [summarise(name, runs[name], n) for name, _ in plan]
    finally:
        if server is not None:
            server.stop()
    base = next(r for r in rows if r["system"] == "loop-per-item")
    for r in rows:
        r["speedup_vs_loop_per_item"] = r["queries_per_s"] / base["queries_per_s"]
    result = {
        "benchmark": "rag",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_1m_at_end": os.getloadavg()[0],
        },
        "workload": {
            "queries": n,
            "chunks_indexed": chunks,
            "max_tokens": args.max_tokens,
            "generate_batch": args.generate_batch,
            "generate_parallelism_sage": args.generate_parallelism,
            "engine": "vLLM OpenAI server, tiny random-weight Llama"
            if server
            else args.llm_url,
            "embedder": "sentence-transformers all-MiniLM-L6-v2 (CPU)",
        },
        "dask": dask_status,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, out.with_suffix(".png"))
    for r in rows:
        print(
            f"{r['system']:<36} {r['queries_per_s']:7.2f} q/s  "
            f"x{r['speedup_vs_loop_per_item']:.2f} vs loop  p50 {r['p50_s']:.2f}s  "
            f"p99 {r['p99_s']:.2f}s  TTFT {r['ttft_p50_ms']:.0f}ms  "
            f"TBT {r['tbt_p50_ms']:.1f}ms"
        )


if __name__ == "__main__":
    main()
