"""bench-admission: N concurrent pipelines on a 2-worker-process cluster under the
``immediate``, ``staggered`` and ``utilisation`` admission policies.

A real cluster (``sage scheduler`` + two ``sage worker`` processes, one thread each)
runs N copies of a CPU-bound pipeline (a source stamping each item with its
emission time -> a map doing ~``--work`` integer operations per item -> a map
turning the stamp into the item's emission-to-sink latency -> ``jsonl``), all
submitted at once through ``JobClient``. Per N and policy: the p99 (and p50) of
the items' latency across all N jobs (the paper's per-task P99), the p99 (and
p50) of job completion times (submission to end, as the job manager records
them), the makespan, total items/s, and per-job efficiency ``N * T1 / makespan``
(T1: one job alone, same policy, same run). Printed: the item p99, job p99 and
throughput of each policy relative to immediate at each N. Policies alternate
within each repeat; figures are medians over ``--repeats``.

``utilisation`` runs twice: gated on measured CPU (``rho`` 0.8, at most 2 jobs)
and as plain slots (``rho`` 1, at most 2 jobs: the next job starts as soon as one
ends, one job per worker process).

Run: ``nox -s bench-admission`` (bench/results/admission.json + .png);
``nox -s bench-admission -- --smoke`` (under 2 minutes; admission-smoke.*).
"""

from __future__ import annotations

import argparse
import json
import os
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
    machine_info,
    percentile,
    pyplot,
    smoke_path,
    spread,
    write_report,
)

WORK_MODULE = """
import time


def stamped(stop):
    for x in range(stop):
        yield [x, time.time()]


def work(item, n={work}):
    x, t = item
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i + x) % 1000003
    return [acc, t]


def latency(item):
    return time.time() - item[1]


def call(item, url="{url}"):
    import urllib.request

    with urllib.request.urlopen(url, timeout=600) as reply:
        reply.read()
    return item
"""
#: label -> (admission policy, its options)
POLICIES: dict[str, tuple[str, dict[str, Any]]] = {
    "immediate": ("immediate", {}),
    "staggered": ("staggered", {"delta_s": 1.0}),
    "utilisation": ("utilisation", {"rho": 0.8, "max_running": 2}),
    "utilisation (2 slots)": ("utilisation", {"rho": 1.0, "max_running": 2}),
}


class SharedEndpoint:
    """An emulated model endpoint shared by every job: one slot, first come first
    served, ``service_s`` per request (a server whose batch is full). HTTP on
    127.0.0.1; each request waits its turn, then the service time."""

    def __init__(self, service_s: float) -> None:
        import http.server
        import queue
        import threading

        turns: queue.Queue[threading.Event] = queue.Queue()

        def serve_turns() -> None:
            while True:
                done = turns.get()
                time.sleep(service_s)
                done.set()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                done = threading.Event()
                turns.put(done)
                done.wait()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=serve_turns, daemon=True).start()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def spec(path: Path, name: str, items: int, out: Path, op: str = "work") -> Path:
    path.write_text(
        f"name: {name}\nsettings: {{buffer_size: 16}}\noperators:\n"
        "  - {name: numbers, use: 'benchwork:stamped', role: source, "
        f"config: {{stop: {items}}}}}\n"
        f"  - {{name: work, use: 'benchwork:{op}', role: map, inputs: [numbers]}}\n"
        "  - {name: latency, use: 'benchwork:latency', role: map, inputs: [work]}\n"
        f"  - {{name: out, use: jsonl, config: {{path: {out}}}, inputs: [latency]}}\n"
    )
    return path


class Cluster:
    """``sage scheduler`` and two ``sage worker`` processes (own sessions)."""

    def __init__(self, tmp: Path) -> None:
        sage = str(Path(sys.executable).parent / "sage")
        env = {**os.environ, "PYTHONPATH": str(tmp), "SAGE_HOME": str(tmp / "home")}
        sched_file = tmp / "scheduler.json"
        self.procs = [
            subprocess.Popen(
                [sage, "scheduler", "--host", "127.0.0.1", "--port", "0",
                 "--no-dashboard", "--scheduler-file", str(sched_file)],
                env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        ]  # fmt: skip
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the scheduler did not start")
            time.sleep(0.1)
        self.address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            self.procs.append(
                subprocess.Popen(
                    [sage, "worker", self.address, "--nthreads", "1",
                     "--name", f"w{i}", "--no-nanny"],
                    env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True,
                )
            )  # fmt: skip
        from distributed import Client

        with Client(self.address) as c:
            c.wait_for_workers(2, timeout=60)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            p.wait(30)


def run_batch(
    jc: Any, tmp: Path, n: int, items: int, tag: str, op: str
) -> dict[str, Any]:
    """Submit ``n`` jobs at once, wait for all; their completion times."""
    t0 = time.time()
    outs = [tmp / f"{tag}-{i}.jsonl" for i in range(n)]
    jobs = [
        jc.submit(spec(tmp / f"{tag}-{i}.yaml", f"{tag}-{i}", items, outs[i], op),
                  owner=f"user{i}")
        for i in range(n)
    ]  # fmt: skip
    finals = [jc.wait(j, timeout=3600) for j in jobs]
    bad = [f for f in finals if f["status"] != "succeeded"]
    if bad:
        raise RuntimeError(f"jobs failed: {bad}")
    done = [f["ended"] - f["submitted"] for f in finals]
    makespan = max(f["ended"] for f in finals) - t0
    lat = [float(line) for out in outs for line in out.read_text().split()]
    if len(lat) != n * items:
        raise RuntimeError(f"{len(lat)} latencies for {n * items} items")
    return {
        "item_p50_s": percentile(lat, 0.5),
        "item_p99_s": percentile(lat, 0.99),
        "p50_s": percentile(done, 0.5),
        "p99_s": percentile(done, 0.99),
        "makespan_s": makespan,
        "items_per_s": n * items / makespan,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    ns = result["concurrency"]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    keys = ("item_p99_s", "p99_s", "items_per_s", "efficiency")
    for i, policy in enumerate(POLICIES):
        rows = [result["runs"][policy][str(n)] for n in ns]
        for ax, key in zip(axes, keys, strict=True):
            ax.errorbar(ns, [r[key]["median"] for r in rows],
                        yerr=[[r[key]["median"] - r[key]["min"] for r in rows],
                              [r[key]["max"] - r[key]["median"] for r in rows]],
                        marker="o", capsize=3, color=f"C{i}", label=policy)  # fmt: skip
    titles = ("item emission-to-sink p99 (s)", "job completion p99 (s)",
              "total items/s", "per-job efficiency N*T1/makespan")  # fmt: skip
    for ax, title in zip(axes, titles, strict=True):
        ax.set(xlabel="concurrent pipelines", title=title)
        ax.set_xscale("log", base=2)
        ax.legend()
    kind = {
        "cpu": "CPU-bound pipelines",
        "endpoint": "pipelines sharing one emulated endpoint",
    }[result["setup"]["workload"]]
    fig.suptitle(f"bench-admission: 2 worker processes, {kind} (shared box)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_smoke_flag(parser)
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    parser.add_argument(
        "--items",
        type=int,
        default=50000,
        help="per job: long enough that jobs overlap",
    )
    parser.add_argument("--work", type=int, default=2000)
    parser.add_argument(
        "--workload",
        choices=("cpu", "endpoint"),
        default="cpu",
        help="cpu: each item costs --work integer operations; endpoint: each item "
        "is a request to one shared emulated endpoint (--service-ms, one slot)",
    )
    parser.add_argument("--service-ms", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    ns = [int(n) for n in args.concurrency.split(",")]
    endpoint = (
        SharedEndpoint(args.service_ms / 1000) if args.workload != "cpu" else None
    )
    if endpoint is not None and args.items == 50000:
        args.items = 1000  # 2 s of the endpoint's time per job
    name = "admission.json" if endpoint is None else "admission-endpoint.json"
    out = args.out or HERE / "results" / name
    if args.smoke:
        ns, args.items, args.repeats, out = [1, 3], 300, 1, smoke_path(out)
    if 1 not in ns:
        ns = [1, *ns]
    before = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="sage-bench-admission-"))
    url = endpoint.url if endpoint is not None else ""
    (tmp / "benchwork.py").write_text(WORK_MODULE.format(work=args.work, url=url))
    cluster = Cluster(tmp)
    from sage_core import JobClient

    raw: dict[str, dict[int, list[dict[str, Any]]]] = {p: {} for p in POLICIES}
    try:
        with JobClient(cluster.address) as jc:
            for rep in range(args.repeats):
                order = list(POLICIES) if rep % 2 == 0 else list(POLICIES)[::-1]
                for n in ns:
                    for policy in order:
                        time.sleep(1.0)  # staggered counts from the last start
                        name, options = POLICIES[policy]
                        jc.admission(name, **options)
                        tag = f"{policy}-{n}-{rep}"
                        op = "work" if endpoint is None else "call"
                        got = run_batch(jc, tmp, n, args.items, tag, op)
                        raw[policy].setdefault(n, []).append(got)
                        print(f"rep {rep} n {n:2d} {policy:21s}: {got}", flush=True)
    finally:
        cluster.close()
        if endpoint is not None:
            endpoint.close()
    runs: dict[str, dict[str, Any]] = {}
    for policy in POLICIES:
        t1 = spread([r["makespan_s"] for r in raw[policy][1]])["median"]
        runs[policy] = {}
        for n in ns:
            reps = raw[policy][n]
            row = {k: spread([r[k] for r in reps]) for k in reps[0]}
            row["efficiency"] = spread([n * t1 / r["makespan_s"] for r in reps])
            runs[policy][str(n)] = row
    ratios = {}
    for policy in [p for p in POLICIES if p != "immediate"]:
        ratios[policy] = {}
        for n in ns:
            mine, base = runs[policy][str(n)], runs["immediate"][str(n)]
            item = mine["item_p99_s"]["median"] / base["item_p99_s"]["median"]
            p99 = mine["p99_s"]["median"] / base["p99_s"]["median"]
            thr = mine["items_per_s"]["median"] / base["items_per_s"]["median"]
            ratios[policy][str(n)] = {
                "item_p99_vs_immediate": item,
                "p99_vs_immediate": p99,
                "throughput_vs_immediate": thr,
            }
            print(f"n {n:2d} {policy:21s}: item p99 {item:.2f}x, job p99 "
                  f"{p99:.2f}x, throughput {thr:.2f}x immediate")  # fmt: skip
    result = {
        "benchmark": "bench-admission",
        "smoke": args.smoke,
        "setup": {
            "cluster": "sage scheduler + 2 sage worker processes, 1 thread each",
            "items_per_job": args.items,
            "workload": args.workload,
            "work_per_item": args.work if endpoint is None else None,
            "endpoint_service_ms": args.service_ms if endpoint is not None else None,
            "repeats": args.repeats,
            "policies": {k: {"policy": p, **o} for k, (p, o) in POLICIES.items()},
            "note": "shared machine: compare policies of the same run only",
        },
        "machine_before": before,
        "machine_after": machine_info(),
        "concurrency": ns,
        "runs": runs,
        "ratios": ratios,
        "raw": {p: {str(n): v for n, v in r.items()} for p, r in raw.items()},
    }
    write_report(out, result, lambda png: plot(result, png))


if __name__ == "__main__":
    main()
