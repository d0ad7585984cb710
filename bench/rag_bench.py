"""RAG benchmark: the RAG pipeline on SAGE's runtimes against the same stages in a loop.

Workload: SAGE's documentation (the demo corpus) indexed once with the packaged
all-MiniLM-L6-v2; then --queries questions flow through embed -> retrieve -> refine ->
prompt -> generate (streamed, --max-tokens tokens each, ``ignore_eos`` so every answer
has the same length) against a real vLLM OpenAI server (the tiny local model, started
here unless --llm-url is given). Queries arrive over time, Poisson at each of --rates
queries/s (``burst``: all at once, the peak-throughput case), the same schedule for
every row; a query's latency runs from its own arrival to its answer, so p50/p99 are
per-query figures. Rows, measured in the same run, interleaved:

* ``sage-local`` with the embed batch size swept (--batch-sizes): the local runtime,
  generate with --generate-parallelism replicas of --generate-batch requests each;
  ``linger_ms=0`` (the source hands each arrival on at once; downstream replicas
  batch whatever has queued);
* ``sage-dask``: the same pipeline as actors on a 2-worker in-process LocalCluster;
* ``loop-per-item``: the same stage objects called one query at a time in a for loop
  (no SAGE, one request in flight: the naive baseline);
* ``loop-batched``: the same loop taking the arrived queries up to the largest embed
  batch, generating on --generate-parallelism threads of --generate-batch requests:
  the same generation concurrency as SAGE.

Per row and rate: queries/s (first arrival to last answer), p50/p99 latency per query,
TTFT/TBT p50, and for SAGE rows the per-stage split (service / queue-wait / blocked, ms
per item). Medians of --repeats with min-max spread. Writes JSON (--out) and a PNG.

    python bench/rag_bench.py --out bench/results/rag.json
    python bench/rag_bench.py --smoke      # seconds after the engine starts
    python bench/rag_bench.py --pin-engine # engine on the last CPU, rows on the rest
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cloudpickle
import rag_runs
from common import (
    add_smoke_flag,
    errorbar_args,
    machine_info,
    percentile,
    pyplot,
    smoke_path,
    spread,
    start_vllm,
)
from rag_runs import STAGES, Setup, index, offsets, run_loop, run_sage

cloudpickle.register_pickle_by_value(rag_runs)  # Dask workers run its functions


def summarise(
    name: str, rate: str, runs: list[dict[str, Any]], n: int
) -> dict[str, Any]:
    """Medians over repeats (with min-max) of one row at one arrival rate."""

    def sp(fn: Callable[[dict[str, Any]], float]) -> dict[str, float]:
        return spread([fn(r) for r in runs])

    def gen_p50(r: dict[str, Any], key: str) -> float:
        # an answer of one token has no time between tokens (None)
        found = [g[key] for g in r["generation"] if g[key] is not None]
        return 1000 * percentile(found, 0.5) if found else float("nan")

    row: dict[str, Any] = {
        "system": name,
        "rate": rate,
        "repeats": len(runs),
        "queries_per_s": sp(lambda r: n / r["wall_s"]),
        "p50_s": sp(lambda r: percentile(r["latencies"], 0.5)),
        "p99_s": sp(lambda r: percentile(r["latencies"], 0.99)),
        "ttft_p50_ms": sp(lambda r: gen_p50(r, "ttft_s")),
        "tbt_p50_ms": sp(lambda r: gen_p50(r, "tbt_s")),
    }
    if "stages" in runs[0]:
        row["stages_ms_per_item"] = {
            s: {
                k: statistics.median(r["stages"][s][k] for r in runs)
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


def plot(rows: list[dict[str, Any]], rates: list[str], path: Path) -> None:
    plt = pyplot()

    systems = list(dict.fromkeys(r["system"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for key, ax, label in (
        ("p50_s", axes[0], "p50 latency per query, s"),
        ("p99_s", axes[1], "p99 latency per query, s"),
        ("queries_per_s", axes[2], "queries/s (first arrival to last answer)"),
    ):
        for system in systems:
            stats = [
                next(r[key] for r in rows if r["system"] == system and r["rate"] == x)
                for x in rates
            ]
            ax.errorbar(
                rates,
                [st["median"] for st in stats],
                marker="o",
                label=system,
                **errorbar_args(stats),
            )
        ax.set_xlabel("offered load, queries/s (Poisson)")
        ax.set_ylabel(label + " (median, min-max)")
        if key != "queries_per_s":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("RAG pipeline: embed -> retrieve -> refine -> prompt -> generate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rates", default="4,8,16,burst", help="queries/s or burst")
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--generate-batch", type=int, default=8)
    parser.add_argument(
        "--generate-parallelism",
        type=int,
        default=2,
        help="generate replicas in the SAGE rows, threads in loop-batched (each "
        "serves --generate-batch requests at once)",
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--llm-url", default=None)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json for budgets")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument(
        "--pin-engine",
        action="store_true",
        help="run the engine it starts on the last CPU and every row's pipeline on "
        "the others, as a GPU engine would leave the host's cores to the pipeline",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/rag.json"))
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.queries, args.repeats, args.rates, args.batch_sizes = 6, 1, "8,burst", "4"
        args.max_tokens = 4
        args.out = smoke_path(args.out)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sage_core.api import LocalEnvironment
    from sage_core.common.settings import cache_dir
    from sage_plugins.engines.tiny_model import make_tiny_model

    before = machine_info()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    rates = args.rates.split(",")
    server = None
    pinned: dict[str, list[int]] | None = None
    if args.llm_url is None:
        model = make_tiny_model(cache_dir() / "models" / "tiny")
        args.tokenizer = args.tokenizer or str(model)
        server, pinned = start_vllm(model, args.model, pin=args.pin_engine)
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
            big = max(batches)
            plan: list[tuple[str, Callable[[list[float]], dict[str, Any]]]] = []
            for b in batches:
                plan.append(
                    (
                        f"sage-local (embed batch {b})",
                        lambda at, b=b: run_sage(
                            setup, LocalEnvironment("rag", linger_ms=0), b, at
                        ),
                    )
                )
            if Dask is not None:

                def dask_run(at: list[float]) -> dict[str, Any]:
                    env = Dask("rag", n_workers=2, threads_per_worker=2, linger_ms=0)
                    try:
                        return run_sage(setup, env, big, at)
                    finally:
                        close = getattr(env, "close", None)
                        if close:
                            close()

                plan.append((f"sage-dask 2 workers (embed batch {big})", dask_run))
            plan.append(("loop-per-item", lambda at: run_loop(setup, 1, 1, at)))
            plan.append(
                (
                    f"loop-batched ({big}, generate x{args.generate_parallelism})",
                    lambda at: run_loop(setup, big, args.generate_parallelism, at),
                )
            )
            # warm-up: models loaded, engine warm
            run_loop(setup, big, args.generate_parallelism, offsets(n, None, 0))
            runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for rep in range(args.repeats):
                for rate in rates:
                    at = offsets(n, None if rate == "burst" else float(rate), rep)
                    for name, fn in list(plan):
                        try:
                            runs.setdefault((name, rate), []).append(fn(at))
                        except Exception as exc:  # reported in the JSON
                            if not name.startswith("sage-dask"):
                                raise
                            dask_status = f"failed: {type(exc).__name__}: {exc}"[:500]
                            print(f"{name}: {dask_status}", file=sys.stderr)
                            plan = [(m, f) for m, f in plan if m != name]
                            runs = {k: v for k, v in runs.items() if k[0] != name}
                            continue
                        print(f"repeat {rep + 1}: {name} at {rate}", file=sys.stderr)
            rows = [
                summarise(name, rate, runs[(name, rate)], n)
                for name, _ in plan
                for rate in rates
            ]
    finally:
        if server is not None:
            server.stop()
    for r in rows:
        for peer in ("loop-batched", "loop-per-item"):
            base = next(
                b
                for b in rows
                if b["system"].startswith(peer) and b["rate"] == r["rate"]
            )
            r[f"qps_vs_{peer}"] = (
                r["queries_per_s"]["median"] / base["queries_per_s"]["median"]
            )
    result = {
        "benchmark": "rag",
        "machine": {"before": before, "after": machine_info()},
        "workload": {
            "queries": n,
            "rates": rates,
            "repeats": args.repeats,
            "chunks_indexed": chunks,
            "max_tokens": args.max_tokens,
            "generate_batch": args.generate_batch,
            "generate_parallelism": args.generate_parallelism,
            "engine": "vLLM OpenAI server, tiny random-weight Llama"
            if server
            else args.llm_url,
            "embedder": "sentence-transformers all-MiniLM-L6-v2 (CPU)",
            "cpus_pinned": pinned or "not pinned: engine and rows share every core",
        },
        "dask": dask_status,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, rates, args.out.with_suffix(".png"))
    for r in rows:
        print(
            f"{r['system']:<40} {r['rate']:>5}  {r['queries_per_s']['median']:7.2f} q/s"
            f"  x{r['qps_vs_loop-batched']:.2f} vs loop-batched"
            f"  p50 {r['p50_s']['median']:.2f}s  p99 {r['p99_s']['median']:.2f}s"
            f"  TTFT {r['ttft_p50_ms']['median']:.0f}ms"
        )


if __name__ == "__main__":
    main()
