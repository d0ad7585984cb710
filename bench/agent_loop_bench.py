"""Agent loop through the runtime: latency and throughput of the ``agent`` operator
with concurrent sessions, against an emulated engine (plumbing only, results are
emulated timings).

The engine: ``sage engine emulate`` with the CPU profile fitted on this machine's
tiny vLLM (one device, one LLM engine, ``tool_rounds`` 2: each item is three model
calls and two ``calculator`` calls; ``emulator/tools.py`` says how the emulated model
picks its calls). Each item is one session's query.

Systems, at each concurrency C (sessions in flight), interleaved in every repeat:

* ``threads`` (the peer): C threads, each running the same ``Agent`` operator
  class over its share of the items, no runtime;
* ``sage-local``: ``LocalEnvironment``, the ``agent`` operator at parallelism C;
* ``sage-dask``: ``DaskEnvironment`` on a 2-process ``LocalCluster``, parallelism C.

Both SAGE runtimes run with ``buffer_size=1``: a router sends a packet to one replica,
so a burst packed into one packet would keep the other replicas idle.

Per run: items/s from the first emission to the last arrival, and per item the
agent loop's own seconds (p50/p99) and its model steps' latency (p50/p99). Medians
of --repeats with min/max; ratios against ``threads`` come from the same run.

    python bench/agent_loop_bench.py --out bench/results/agent_loop.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cloudpickle
import common
from common import (
    Span,
    add_smoke_flag,
    grouped_bars,
    machine_info,
    percentile,
    pyplot,
    smoke_path,
    spread,
    write_report,
)
from dask_peers import dask_session
from mixed_emu_setup import Emulator

cloudpickle.register_pickle_by_value(common)
_perf = time.perf_counter
PROFILE = "cpu-2core-tiny-llama-minilm"
SYSTEMS = ("threads", "sage-local", "sage-dask")
Run = tuple[float, list[dict[str, Any]]]  # (span seconds, agent traces)
# items reach replicas a packet at a time: one item per packet spreads a burst of
# sessions over the agent's replicas (as examples/pipelines/rag.yaml does)
SETTINGS = {"buffer_size": 1, "trace_every": 0}


def queries(n: int) -> Iterator[dict[str, Any]]:
    """Session queries stamped at emission (``t``)."""
    for i in range(n):
        yield {"query": f"{i} * 3", "t": _perf()}


def agent_config(url: str) -> dict[str, Any]:
    return {"base_url": url + "/v1", "model": "llama", "tools": ["calculator"]}


def threads_run(url: str, n: int, c: int) -> Run:
    from sage_core.functions import OperatorContext
    from sage_plugins.agents import Agent

    span, traces = Span(), []

    def session(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        agent = Agent(**agent_config(url))
        agent.open(OperatorContext("agent"))
        try:
            out = []
            for item in items:
                out.append(agent.map(item))
                span.add([item], _perf())  # the GIL makes each update whole
            return out
        finally:
            agent.close()

    items = list(queries(n))
    with ThreadPoolExecutor(c) as pool:
        for part in pool.map(session, [items[i::c] for i in range(c)]):
            traces += [x["agent"] for x in part]
    return span.seconds(), traces


def traced_sink() -> type:
    """``latency_sink`` that also keeps each item's agent trace."""
    base = common.latency_sink(span=True)

    class TracedSink(base):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__()
            self.traces: list[dict[str, Any]] = []

        def sink_batch(self, items: list[Any]) -> None:
            super().sink_batch(items)
            self.traces += [x["agent"] for x in items]

        def result(self) -> Any:
            return super().result()[1], self.traces

    return TracedSink


def sage(make_env: Callable[[], Any], url: str, n: int, c: int) -> Run:
    env = make_env()
    env.from_source(queries, n=n).map("agent", parallelism=c, **agent_config(url)).sink(
        traced_sink(), name="out"
    )
    span_s, traces = env.execute(timeout=600).results["out"][0]
    return span_s, traces


def summarise(runs: list[Run], n: int) -> dict[str, Any]:
    loops = [[t["seconds"] * 1e3 for t in traces] for _, traces in runs]
    steps = [
        [s["model_s"] * 1e3 for t in traces for s in t["steps"]] for _, traces in runs
    ]
    for _, traces in runs:
        bad = [t for t in traces if t["stopped"] != "answer" or len(t["steps"]) != 3]
        if len(traces) != n or bad:
            raise SystemExit(f"{len(traces)} of {n} items, {len(bad)} not answered")
    return {
        "items_per_s": spread([n / span for span, _ in runs]),
        "loop_p50_ms": spread([percentile(v, 0.5) for v in loops]),
        "loop_p99_ms": spread([percentile(v, 0.99) for v in loops]),
        "model_step_p50_ms": spread([percentile(v, 0.5) for v in steps]),
        "model_step_p99_ms": spread([percentile(v, 0.99) for v in steps]),
    }


def measure(args: argparse.Namespace, url: str) -> dict[tuple[str, int], list[Run]]:
    from sage_core import LocalEnvironment
    from sage_core.api.dask_environment import DaskEnvironment

    runs: dict[tuple[str, int], list[Run]] = {}
    with dask_session() as client:

        def dask_env() -> Any:
            return DaskEnvironment("agent-loop", client=client, **SETTINGS)

        def local_env() -> Any:
            return LocalEnvironment("agent-loop", **SETTINGS)

        fns: dict[str, Callable[[int, int], Run]] = {
            "threads": lambda n, c: threads_run(url, n, c),
            "sage-local": lambda n, c: sage(local_env, url, n, c),
            "sage-dask": lambda n, c: sage(dask_env, url, n, c),
        }
        for fn in fns.values():  # warm-up: imports, plugin loading, worker start-up
            fn(4, 2)
        for r in range(args.repeats):
            for c in args.concurrency:
                n = max(args.min_items, args.items_per_session * c)
                for system in SYSTEMS:
                    runs.setdefault((system, c), []).append(fns[system](n, c))
            print(f"repeat {r + 1}/{args.repeats} done", flush=True)
    return runs


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    by = {(r["system"], r["concurrency"]): r for r in rows}
    cs = sorted({r["concurrency"] for r in rows})
    for ax, metric, title in (
        (axes[0], "items_per_s", "items/s (higher is better)"),
        (axes[1], "loop_p99_ms", "agent loop p99 ms (lower is better)"),
    ):

        def stat(c: int, system: str, metric: str = metric) -> Any:
            row = by.get((system, c))
            return row[metric] if row else None

        grouped_bars(ax, cs, SYSTEMS, stat, [f"{c} sessions" for c in cs])
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("agent loop on an emulated CPU engine (median, min-max bars)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--items-per-session", type=int, default=8)
    parser.add_argument("--min-items", type=int, default=32)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/agent_loop.json")
    )
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.concurrency = 1, [2]
        args.items_per_session, args.min_items = 2, 4
        args.out = smoke_path(args.out)
    before = machine_info()
    config = {
        "profile": PROFILE,
        "time_scale": args.time_scale,
        "devices": [
            {
                "name": "dev0",
                "engines": [
                    {"id": "llm0", "kind": "llm", "model": "llama", "tool_rounds": 2}
                ],
            }
        ],
    }
    emulator = Emulator(config)
    try:
        runs = measure(args, emulator.urls("llm")[0])
    finally:
        emulator.stop()
    rows = []
    for (system, c), rs in runs.items():
        n = max(args.min_items, args.items_per_session * c)
        rows.append(
            {"system": system, "concurrency": c, "items": n, **summarise(rs, n)}
        )
    ratios = []
    for c in args.concurrency:
        peer = next(
            r for r in rows if r["system"] == "threads" and r["concurrency"] == c
        )
        for r in rows:
            if r["concurrency"] == c and r["system"] != "threads":
                ratios.append(
                    {
                        "system": r["system"],
                        "concurrency": c,
                        "throughput_vs_threads": r["items_per_s"]["median"]
                        / peer["items_per_s"]["median"],
                        "loop_p50_added_ms": r["loop_p50_ms"]["median"]
                        - peer["loop_p50_ms"]["median"],
                    }
                )
    for r in rows:
        print(
            f"{r['system']:<11} C={r['concurrency']:<3} "
            f"{r['items_per_s']['median']:7.1f} items/s  loop p50 "
            f"{r['loop_p50_ms']['median']:7.1f} ms p99 {r['loop_p99_ms']['median']:7.1f} ms"
            f"  model step p50 {r['model_step_p50_ms']['median']:6.1f} ms"
        )
    for x in ratios:
        print(
            f"{x['system']} C={x['concurrency']}: {x['throughput_vs_threads']:.2f}x "
            f"threads' items/s, loop p50 {x['loop_p50_added_ms']:+.1f} ms"
        )
    report = {
        "emulated": True,
        "engine": {"profile": PROFILE, "time_scale": args.time_scale, "tool_rounds": 2},
        "machine": {"before": before, "after": machine_info()},
        "repeats": args.repeats,
        "smoke": args.smoke,
        "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "rows": rows,
        "ratios": ratios,
    }
    write_report(args.out, report, lambda png: plot(rows, png))


if __name__ == "__main__":
    main()
