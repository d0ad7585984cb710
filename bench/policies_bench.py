"""Placement policies on a MIXED workload (the paper's Table 1, our version).

A LocalCluster of 4 single-thread worker processes runs two jobs at once, 50/50:
COMPUTE (source -> 100 us op x2 -> sink) and a CPU-bound RAG-like job (source ->
embed-like numpy stage x2 -> score stage x2 -> sink); the RAG job has priority 1.
For each policy: throughput (items of both jobs / makespan), mean and p99 end-to-end
latency, and balance = 1 - sigma/mu of the service seconds per worker. Medians of
--repeats (policies interleaved) with their min-max spread. Writes JSON and a PNG.

    python bench/policies_bench.py --out bench/results/policies.json
    python bench/policies_bench.py --smoke   # seconds, policies-smoke.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cloudpickle
import common
import dask_peers
import numpy as np
from common import (
    add_smoke_flag,
    errorbar_args,
    latency_sink,
    machine_info,
    pyplot,
    smoke_path,
    spread,
)
from dask_peers import busy, local_cluster, source_items

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(dask_peers)
cloudpickle.register_pickle_by_value(common)

POLICIES = ["fifo", "round-robin", "load-aware-spread", "load-aware-pack", "priority"]
_perf = time.perf_counter


def embed_like(item: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(item["id"])
    m = rng.standard_normal((96, 96))
    item["v"] = float(np.linalg.norm(m @ m))
    return item


def score_like(item: dict[str, Any]) -> dict[str, Any]:
    words = (item["payload"] * 3).split("x")
    item["s"] = len(words)
    return busy(300e-6)(item)


def one(client: Any, policy: str, n: int) -> dict[str, Any]:
    from sage_core.api.dask_environment import DaskEnvironment

    light = {"cpu": 0.25}
    common = {"chaining": False, "buffer_size": 32, "queue_capacity": 16}
    jobs = []
    sink = latency_sink()
    for name, prio in (("compute", 0), ("rag", 1)):
        env = DaskEnvironment(
            name, client=client, policy=policy, priority=prio, **common
        )
        s = env.from_source(source_items, n=n, contract=light)
        if name == "compute":
            s = s.map(busy(100e-6), parallelism=2, name="op")
        else:
            s = s.map(embed_like, parallelism=2, name="embed")
            s = s.map(score_like, parallelism=2, name="score")
        s.sink(sink, contract=light)
        jobs.append(env)
    t0 = _perf()
    handles = [env.submit() for env in jobs]  # the second sees the first's replicas
    results = [h.wait(timeout=900) for h in handles]
    wall = _perf() - t0
    lat = [x for r in results for x in r.results["LatencySink"][0]]
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    load = dict.fromkeys(workers, 0.0)
    for r in results:
        for snap in r.metrics["replicas"].values():
            load[snap["worker"]] += snap["service_s"]
    loads = list(load.values())
    mu = statistics.mean(loads)
    lat.sort()
    return {
        "throughput": len(lat) / wall,
        "mean_ms": statistics.mean(lat) * 1e3,
        "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1e3,
        "balance": 1 - statistics.pstdev(loads) / mu if mu else 0.0,
        "replicas_per_worker": [
            sum(
                1
                for r in results
                for s in r.metrics["replicas"].values()
                if s["worker"] == w
            )
            for w in workers
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=3000, help="items per job")
    parser.add_argument("--out", type=Path, default=Path("bench/results/policies.json"))
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.n = 1, 100
        args.out = smoke_path(args.out)
    before = machine_info()
    cluster, client, _ = local_cluster(4)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in POLICIES}
    for _ in range(args.repeats):
        for p in POLICIES:  # interleaved so machine noise hits every policy
            runs[p].append(one(client, p, args.n))
    rows = []
    print(f"{'policy':<20}{'items/s':>10}{'mean ms':>10}{'p99 ms':>10}{'balance':>9}")
    for p in POLICIES:
        row = {
            "policy": p,
            **{
                k: statistics.median(r[k] for r in runs[p])
                for k in ("throughput", "mean_ms", "p99_ms", "balance")
            },
            "spread": {
                k: spread([r[k] for r in runs[p]])
                for k in ("throughput", "mean_ms", "p99_ms", "balance")
            },
            "replicas_per_worker": runs[p][0]["replicas_per_worker"],
            "repeats": len(runs[p]),
        }
        rows.append(row)
        print(
            f"{p:<20}{row['throughput']:>10.0f}{row['mean_ms']:>10.1f}"
            f"{row['p99_ms']:>10.1f}{row['balance']:>9.0%}  {row['replicas_per_worker']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"before": before, "after": machine_info()}
    payload = {"machine": machine, "n": args.n, "repeats": args.repeats, "rows": rows}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, title in zip(
        axes,
        ("throughput", "p99_ms", "balance"),
        ("items/s", "p99 latency (ms)", "balance"),
        strict=True,
    ):
        stats = [r["spread"][key] for r in rows]
        ax.bar(
            [r["policy"] for r in rows],
            [st["median"] for st in stats],
            **errorbar_args(stats),
        )
        ax.set_title(f"{title}, median and min-max")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("MIXED workload, 4 single-thread workers")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"wrote {args.out}")
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
