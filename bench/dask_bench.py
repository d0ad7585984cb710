"""COMPUTE across two Dask worker processes: SAGE's Dask runtime vs naive Dask actors
(per item, per 256-item list) and Ray actors (256-item batches), same run.

Op costs no-op / 100 us / 1 ms (busy loop). Medians of --repeats runs, interleaved
across systems: items/s, p50/p99 latency, worker CPU us per item; ratios of SAGE to
each peer. Writes JSON and a PNG.

    python bench/dask_bench.py --out bench/results/dask.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cloudpickle
import dask_peers
from dask_peers import Run, local_cluster, naive_run, ray_runner, sage_run

cloudpickle.register_pickle_by_value(dask_peers)
COSTS = {"noop": 0.0, "100us": 100e-6, "1ms": 1e-3}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _row(cost: str, system: str, n: int, runs: list[Run]) -> dict[str, Any]:
    return {
        "cost": cost,
        "system": system,
        "n": n,
        "items_per_s": statistics.median(n / r.wall_s for r in runs),
        "p50_ms": statistics.median(_pct(r.latencies, 0.5) for r in runs) * 1e3,
        "p99_ms": statistics.median(_pct(r.latencies, 0.99) for r in runs) * 1e3,
        "cpu_us_per_item": statistics.median(r.cpu_s / n for r in runs) * 1e6,
        "repeats": len(runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=200_000, help="items, no-op")
    parser.add_argument("--n-naive", type=int, default=2_000, help="naive per item")
    parser.add_argument("--batch", type=int, default=1024, help="SAGE buffer_size")
    parser.add_argument("--costs", nargs="+", default=list(COSTS))
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/dask.json"))
    args = parser.parse_args()

    cluster, client, pids = local_cluster(2)
    ray_run, ray_error = None, None
    if not args.no_ray:
        try:
            ray_run = ray_runner()
        except Exception as exc:  # noqa: BLE001 - reported in the results
            ray_error = f"{type(exc).__name__}: {exc}"
            print(f"Ray unavailable: {ray_error}", flush=True)
    rows = []
    for cost in args.costs:
        c = COSTS[cost]
        scale = {"noop": 1.0, "100us": 0.05, "1ms": 0.005}[cost]
        n = max(2000, int(args.n * scale))
        n_naive = max(200, int(args.n_naive * min(1.0, scale * 4)))
        systems = {
            "sage-dask": (
                n,
                lambda n=n, c=c: sage_run(client, pids, n, c, args.batch),
            ),
            "dask-actors-per-item": (
                n_naive,
                lambda n=n_naive, c=c: naive_run(client, pids, n, c, 1),
            ),
            "dask-actors-batch256": (
                n,
                lambda n=n, c=c: naive_run(client, pids, n, c, 256),
            ),
        }
        if ray_run is not None:
            systems["ray-actors-batch256"] = (
                n,
                lambda n=n, c=c: ray_run(n, c, 256),
            )
        runs: dict[str, list[Run]] = {s: [] for s in systems}
        for _ in range(args.repeats):
            for s, (count, fn) in systems.items():
                run = fn()
                if len(run.latencies) != count:
                    raise SystemExit(f"{s}: {len(run.latencies)} of {count} arrived")
                runs[s].append(run)
        for s, (count, _) in systems.items():
            row = _row(cost, s, count, runs[s])
            rows.append(row)
            print(
                f"{cost:>6} {s:<22}{row['items_per_s']:>11,.0f}/s p50 "
                f"{row['p50_ms']:9.2f} p99 {row['p99_ms']:9.2f} ms  cpu "
                f"{row['cpu_us_per_item']:8.2f} us/item",
                flush=True,
            )
    ratios = []
    for cost in args.costs:
        by = {r["system"]: r for r in rows if r["cost"] == cost}
        sage = by["sage-dask"]["items_per_s"]
        entry = {"cost": cost}
        for peer, r in by.items():
            if peer != "sage-dask":
                entry[f"vs_{peer}"] = sage / r["items_per_s"]
        ratios.append(entry)
        print(cost, "  ".join(f"{k} {v:.1f}x" for k, v in entry.items() if k != "cost"))
    payload = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "platform": platform.platform(),
        },
        "batch": args.batch,
        "ray_error": ray_error,
        "rows": rows,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    client.close()
    cluster.close()


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs = list(dict.fromkeys(r["cost"] for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(systems)
    for k, (metric, title) in enumerate(
        (
            ("items_per_s", "items/s (log)"),
            ("cpu_us_per_item", "worker CPU us/item (log)"),
        )
    ):
        for j, s in enumerate(systems):
            vals = [
                next(
                    (r[metric] for r in rows if r["cost"] == c and r["system"] == s), 0
                )
                for c in costs
            ]
            axes[k].bar(
                [i + j * width for i in range(len(costs))], vals, width, label=s
            )
        axes[k].set_xticks([i + 0.4 - width / 2 for i in range(len(costs))], costs)
        axes[k].set_yscale("log")
        axes[k].set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle("COMPUTE across 2 Dask worker processes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
