"""bench-serve: a served pipeline against a hand-written asyncio service doing the same
calls, under open-loop Poisson load at increasing rates.

Both serve ``examples/pipelines/rag.yaml`` (hash embedder, native index over SAGE's
docs, extractive generation: CPU only, no model download) in their own process on
127.0.0.1: ``sage serve`` and ``bench/serve_peer.py`` (the same operator objects
behind its own micro-batcher and worker thread). For each rate the load generator
(``common.open_loop_post``: plain asyncio keep-alive connections, latency from each
request's scheduled send time) sends requests at exponential gaps for ``--seconds``
and records, per service,
answered requests/s, p50/p99 latency of the answered ones and the share refused with
429 (the served pipeline's ``--max-in-flight`` cap). Services alternate within each
repeat; figures are medians over ``--repeats`` with min-max spread, and the ratio
served/peer of throughput and of p99 at each rate is printed.

Run: ``nox -s bench-serve`` (bench/results/serve.json + serve.png);
``nox -s bench-serve -- --smoke`` (seconds; serve-smoke.*).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import (
    add_smoke_flag,
    free_port,
    machine_info,
    open_loop_post,
    pyplot,
    smoke_path,
    spread,
    wait_ready,
    write_report,
)

SPEC = ROOT / "examples" / "pipelines" / "rag.yaml"
INDEX_SPEC = ROOT / "examples" / "pipelines" / "rag-index.yaml"
QUESTIONS = [
    json.loads(line)
    for line in (ROOT / "sage_plugins/demo/data/questions.jsonl")
    .read_text()
    .splitlines()
    if line.strip()
]
SERVICES = ("served", "peer")


def start(service: str, port: int, env: dict[str, str], cap: int) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent
    if service == "served":
        argv = [str(bin_dir / "sage"), "serve", str(SPEC), "--port", str(port)]
        argv += ["--max-in-flight", str(cap)]
    else:
        argv = [
            sys.executable,
            str(HERE / "serve_peer.py"),
            str(SPEC),
            "--port",
            str(port),
        ]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_ready(port, "/health", 120)
    return proc


async def poisson_load(
    port: int, rate: float, seconds: float, seed: int
) -> dict[str, Any]:
    """Open loop: questions at exponential gaps (mean 1/rate) for ``seconds``."""
    got = await open_loop_post(
        port, "/v1/pipelines/rag", QUESTIONS, rate, seconds, seed
    )
    del got["timeline"]
    return got


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, service in enumerate(SERVICES):
        rows = [r for r in result["rates"] if r[service]["p99_ms"] is not None]
        thr = [r[service]["ok_per_s"]["median"] for r in rows]
        for q, style in (("p50_ms", "--"), ("p99_ms", "-")):
            ax1.plot(thr, [r[service][q]["median"] for r in rows], style, marker="o",
                     color=f"C{i}", label=f"{service} {q[:3]}")  # fmt: skip
        ax2.plot([r["rate"] for r in result["rates"]],
                 [r[service]["refused_share"]["median"] for r in result["rates"]],
                 marker="o", color=f"C{i}", label=service)  # fmt: skip
    ax1.set(xlabel="answered requests/s", ylabel="latency (ms)", yscale="log",
            title="latency vs throughput (median of repeats)")  # fmt: skip
    ax2.set(xlabel="offered rate (req/s)", ylabel="share refused (429)",
            title="overload behaviour")  # fmt: skip
    ax1.legend()
    ax2.legend()
    fig.suptitle("bench-serve: sage serve vs hand-written asyncio service (shared box)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_smoke_flag(parser)
    parser.add_argument("--rates", default="10,20,40,80,160,320")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve.json")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    out = args.out
    if args.smoke:
        rates, args.seconds, args.repeats, out = [10.0, 40.0], 3.0, 1, smoke_path(out)
    before = machine_info()
    home = tempfile.mkdtemp(prefix="sage-bench-serve-")
    env = {**os.environ, "SAGE_HOME": home}
    sage = str(Path(sys.executable).parent / "sage")
    subprocess.run([sage, "run", str(INDEX_SPEC)], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    runs: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for rep in range(args.repeats):
        for service in SERVICES if rep % 2 == 0 else SERVICES[::-1]:
            port = free_port()
            proc = start(service, port, env, args.max_in_flight)
            try:
                asyncio.run(poisson_load(port, 5, 1.0, seed=-1))  # warm up
                for rate in rates:
                    got = asyncio.run(poisson_load(port, rate, args.seconds, seed=rep))
                    runs.setdefault((rate, service), []).append(got)
                    print(f"rep {rep} {service:6s} rate {rate:6.0f}: {got}", flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
    rows = []
    for rate in rates:
        row: dict[str, Any] = {"rate": rate}
        for service in SERVICES:
            reps = runs[(rate, service)]
            row[service] = {
                key: spread([r[key] for r in reps if r[key] is not None])
                if any(r[key] is not None for r in reps) else None
                for key in ("ok_per_s", "p50_ms", "p99_ms", "refused_share")
            }  # fmt: skip
            row[service]["runs"] = reps
        s, p = row["served"], row["peer"]
        row["throughput_ratio"] = s["ok_per_s"]["median"] / p["ok_per_s"]["median"]
        if s["p99_ms"] and p["p99_ms"]:
            row["p99_ratio"] = s["p99_ms"]["median"] / p["p99_ms"]["median"]
        rows.append(row)
        print(f"rate {rate:6.0f}: throughput served/peer {row['throughput_ratio']:.2f}x"
              f", p99 served/peer {row.get('p99_ratio', float('nan')):.2f}x")  # fmt: skip
    result = {
        "benchmark": "bench-serve",
        "smoke": args.smoke,
        "setup": {
            "spec": "examples/pipelines/rag.yaml (hash embedder, extractive)",
            "seconds_per_rate": args.seconds,
            "repeats": args.repeats,
            "max_in_flight": args.max_in_flight,
            "note": "shared machine: compare served and peer of the same run only",
        },
        "machine_before": before,
        "machine_after": machine_info(),
        "rates": rows,
    }
    write_report(out, result, lambda png: plot(result, png))


if __name__ == "__main__":
    main()
