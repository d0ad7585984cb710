"""Gateway overhead: added latency over calling an engine directly, and requests/s.

Starts a trivial engine (``bench/trivial_engine.py``) and ``sage gateway`` in front of
it, each in its own process on 127.0.0.1, then in the same run:

* latency: sequential keep-alive requests alternating direct / through the gateway
  (``--requests`` of each per repeat); added latency = gateway minus direct, at the
  median and at p99;
* throughput: ``--connections`` keep-alive connections in a closed loop for
  ``--seconds``, against the engine directly and through the gateway.

Everything (engine, gateway, load generator) shares this machine's cores; the load
generator is a minimal asyncio HTTP/1.1 client to keep its own cost low.
Run: ``nox -s bench-gateway`` (writes bench/results/gateway.json and gateway.png).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BODY = json.dumps(
    {
        "model": "trivial",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1,
    }
).encode()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing healthy on port {port}{path} after {timeout}s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def latency_round(engine: int, gateway: int, n: int) -> dict[str, list[float]]:
    conns = {
        "direct": http.client.HTTPConnection("127.0.0.1", engine),
        "gateway": http.client.HTTPConnection("127.0.0.1", gateway),
    }
    headers = {"Content-Type": "application/json"}
    out: dict[str, list[float]] = {"direct": [], "gateway": []}
    for i in range(n + 50):
        for name in ("direct", "gateway") if i % 2 else ("gateway", "direct"):
            conn = conns[name]
            start = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", BODY, headers)
            resp = conn.getresponse()
            resp.read()
            elapsed = time.perf_counter() - start
            if resp.status != 200:
                raise RuntimeError(f"{name} answered {resp.status}")
            if i >= 50:  # warm-up excluded
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--policy", default="fifo")
    parser.add_argument("--out", default=str(HERE / "results" / "gateway.json"))
    args = parser.parse_args()

    engine_port, gateway_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.yaml"
        config.write_text(
            json.dumps(
                {
                    "engines": [
                        {
                            "id": "trivial",
                            "url": f"http://127.0.0.1:{engine_port}",
                            "model": "trivial",
                            "max_inflight": 256,
                        }
                    ],
                    "policy": args.policy,
                    "queue_limits": {"chat": 4096},
                }
            )
        )
        sage = Path(sys.executable).with_name("sage")
        try:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "trivial_engine.py"),
                        "--port",
                        str(engine_port),
                    ]
                )
            )
            wait_ready(engine_port, "/health")
            procs.append(
                subprocess.Popen(
                    [
                        str(sage),
                        "gateway",
                        "--port",
                        str(gateway_port),
                        "--config",
                        str(config),
                        "--log-level",
                        "warning",
                    ]
                )
            )
            wait_ready(gateway_port, "/health")
            rounds = []
            for r in range(args.repeats):
                lat = latency_round(engine_port, gateway_port, args.requests)
                direct_rps = throughput_round(
                    engine_port, args.connections, args.seconds
                )
                gateway_rps = throughput_round(
                    gateway_port, args.connections, args.seconds
                )
                row = {
                    "direct_p50_ms": statistics.median(lat["direct"]),
                    "gateway_p50_ms": statistics.median(lat["gateway"]),
                    "direct_p99_ms": pct(lat["direct"], 0.99),
                    "gateway_p99_ms": pct(lat["gateway"], 0.99),
                    "direct_rps": direct_rps,
                    "gateway_rps": gateway_rps,
                }
                row["added_p50_ms"] = row["gateway_p50_ms"] - row["direct_p50_ms"]
                row["added_p99_ms"] = row["gateway_p99_ms"] - row["direct_p99_ms"]
                rounds.append(row)
                print(
                    f"repeat {r + 1}: "
                    + ", ".join(f"{k}={v:.3f}" for k, v in row.items())
                )
                if r == args.repeats - 1:
                    last = lat
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(20)

    summary = {k: statistics.median(row[k] for row in rounds) for k in rounds[0]}
    result = {
        "benchmark": "gateway-overhead",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": vars(args),
        "goal": {"added_p50_ms": 1.0, "added_p99_ms": 5.0},
        "summary_median_of_repeats": summary,
        "ratio_gateway_over_direct_rps": summary["gateway_rps"] / summary["direct_rps"],
        "repeats": rounds,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {"summary": summary, "ratio_rps": result["ratio_gateway_over_direct_rps"]},
            indent=2,
        )
    )
    plot(last, summary, out.with_suffix(".png"))


def plot(last: dict[str, list[float]], summary: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.boxplot([last["direct"], last["gateway"]], showfliers=False)
    ax1.set_xticks([1, 2], ["engine direct", "through gateway"])
    ax1.set_ylabel("latency (ms)")
    ax1.set_title(
        f"added p50 {summary['added_p50_ms']:.2f} ms, p99 {summary['added_p99_ms']:.2f} ms"
    )
    ax2.bar(
        ["engine direct", "through gateway"],
        [summary["direct_rps"], summary["gateway_rps"]],
    )
    ax2.set_ylabel("requests/s (closed loop)")
    ax2.set_title("throughput, trivial engine, 2 shared cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
