"""Gateway overhead: added latency over calling an engine directly, and requests/s.

Starts a trivial engine (``bench/trivial_engine.py``) and ``sage gateway`` in front of
it, each in its own process on 127.0.0.1, then in the same run:

* latency: sequential keep-alive requests alternating direct / through the gateway
  (``--requests`` of each per repeat); the added latency of a repeat is the gateway's
  p50 (p99) minus the direct p50 (p99) of the same repeat, and the figure is the median
  of the repeats' added latencies, with their min-max spread;
* throughput: ``--connections`` keep-alive connections in a closed loop for
  ``--seconds``, against the engine directly and through the gateway.

Everything (engine, gateway, load generator) shares this machine's cores; the load
generator is a minimal asyncio HTTP/1.1 client to keep its own cost low.
Run: ``nox -s bench-gateway`` (writes bench/results/gateway.json and gateway.png);
``nox -s bench-gateway -- --smoke`` runs it in seconds (gateway-smoke.json).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
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
    add_smoke_flag,
    errorbar_args,
    free_port,
    machine_info,
    percentile,
    pyplot,
    smoke_path,
    spread,
    start_gateway,
    wait_ready,
)

BODY = json.dumps(
    {
        "model": "trivial",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1,
    }
).encode()


def latency_round(
    engine: int, gateway: int, n: int, warmup: int
) -> dict[str, list[float]]:
    conns = {
        "direct": http.client.HTTPConnection("127.0.0.1", engine),
        "gateway": http.client.HTTPConnection("127.0.0.1", gateway),
    }
    headers = {"Content-Type": "application/json"}
    out: dict[str, list[float]] = {"direct": [], "gateway": []}
    for i in range(n + warmup):
        for name in ("direct", "gateway") if i % 2 else ("gateway", "direct"):
            conn = conns[name]
            start = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", BODY, headers)
            resp = conn.getresponse()
            resp.read()
            elapsed = time.perf_counter() - start
            if resp.status != 200:
                raise RuntimeError(f"{name} answered {resp.status}")
            if i >= warmup:  # warm-up excluded
                out[name].append(elapsed * 1000.0)
    for conn in conns.values():
        conn.close()
    return out


async def _client(port: int, stop_at: float, counter: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(BODY)).encode()
        + b"\r\n\r\n"
        + BODY
    )
    while time.perf_counter() < stop_at:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n")[0].decode())
        counter[0] += 1
    writer.close()


def throughput_round(port: int, connections: int, seconds: float) -> float:
    async def run() -> float:
        counter = [0]
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(
            *(_client(port, stop_at, counter) for _ in range(connections))
        )
        return counter[0] / (time.perf_counter() - start)

    return asyncio.run(run())


def gateway_config(path: Path, engine_port: int, policy: str) -> None:
    """Write the gateway's config: one trivial engine, the given policy."""
    engine = {
        "id": "trivial",
        "url": f"http://127.0.0.1:{engine_port}",
        "model": "trivial",
        "max_inflight": 256,
    }
    path.write_text(
        json.dumps(
            {"engines": [engine], "policy": policy, "queue_limits": {"chat": 4096}}
        )
    )


def one_repeat(engine: int, gateway: int, args: argparse.Namespace) -> dict[str, Any]:
    """Latency (alternating requests) then closed-loop throughput, direct and gateway."""
    lat = latency_round(engine, gateway, args.requests, args.warmup)
    row = {
        "direct_p50_ms": statistics.median(lat["direct"]),
        "gateway_p50_ms": statistics.median(lat["gateway"]),
        "direct_p99_ms": percentile(lat["direct"], 0.99),
        "gateway_p99_ms": percentile(lat["gateway"], 0.99),
        "direct_rps": throughput_round(engine, args.connections, args.seconds),
        "gateway_rps": throughput_round(gateway, args.connections, args.seconds),
    }
    # added latency: gateway minus direct of this same repeat
    row["added_p50_ms"] = row["gateway_p50_ms"] - row["direct_p50_ms"]
    row["added_p99_ms"] = row["gateway_p99_ms"] - row["direct_p99_ms"]
    row["rps_ratio"] = row["gateway_rps"] / row["direct_rps"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--policy", default="fifo")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gateway.json")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.requests, args.warmup = 1, 50, 10
        args.connections, args.seconds = 4, 0.5
        args.out = smoke_path(args.out)

    before = machine_info()
    engine_port, gateway_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.yaml"
        gateway_config(config, engine_port, args.policy)
        try:
            engine = [sys.executable, str(HERE / "trivial_engine.py")]
            procs.append(subprocess.Popen([*engine, "--port", str(engine_port)]))
            wait_ready(engine_port, "/health")
            procs.append(start_gateway(gateway_port, config))
            wait_ready(gateway_port, "/health")
            for r in range(args.repeats):
                row = one_repeat(engine_port, gateway_port, args)
                rounds.append(row)
                print(
                    f"repeat {r + 1}: "
                    + ", ".join(f"{k}={v:.3f}" for k, v in row.items())
                )
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(20)

    summary = {k: spread([row[k] for row in rounds]) for k in rounds[0]}
    result = {
        "benchmark": "gateway-overhead",
        "machine": {"before": before, "after": machine_info()},
        "config": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "goal": {"added_p50_ms": 1.0, "added_p99_ms": 5.0},
        "method": "added latency per repeat (gateway minus direct of the same "
        "repeat), then median and min-max over repeats",
        "summary": summary,
        "repeats": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v["median"] for k, v in summary.items()}, indent=2))
    plot(summary, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


def plot(summary: dict[str, dict[str, float]], path: Path) -> None:
    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    keys = ["added_p50_ms", "added_p99_ms"]
    stats = [summary[k] for k in keys]
    ax1.bar(["p50", "p99"], [s["median"] for s in stats], **errorbar_args(stats))
    ax1.set_ylabel("added latency, ms (median of repeats, min-max)")
    ax1.set_title(
        f"gateway minus direct, same repeat: p50 {stats[0]['median']:.2f} ms, "
        f"p99 {stats[1]['median']:.2f} ms",
        fontsize=9,
    )
    stats = [summary["direct_rps"], summary["gateway_rps"]]
    ax2.bar(
        ["engine direct", "through gateway"],
        [s["median"] for s in stats],
        **errorbar_args(stats),
    )
    ax2.set_ylabel("requests/s (closed loop; median, min-max)")
    ax2.set_title("throughput, trivial engine, shared cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
