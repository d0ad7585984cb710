"""COMPUTE benchmark: SAGE's local runtime against a for-loop, threads+Queue, Bytewax.

The paper's COMPUTE pipeline (Source -> ComputeOp -> Sink, ~800-byte dict items) with
op costs 0, 100 us and 1 ms (busy loop), per item (packets of one item) and batched
(64), in one run: items/s, p50/p99 end-to-end latency and CPU us per item at full
speed, then p99 at half load (the source paced to half of that system's measured
rate). Medians of --repeats runs, interleaved across systems. Writes JSON and a PNG.

    python bench/runtime_bench.py --out bench/results/runtime.json
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

from runtime_peers import SYSTEMS, Run, Workload

COSTS = {"noop": 0.0, "100us": 100e-6, "1ms": 1e-3}
MODES = {"per-item": 1, "batched": 64}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(runs: list[Run], n: int) -> dict[str, float]:
    return {
        "items_per_s": statistics.median(n / r.wall_s for r in runs),
        "p50_ms": statistics.median(_pct(r.latencies, 0.50) for r in runs) * 1e3,
        "p99_ms": statistics.median(_pct(r.latencies, 0.99) for r in runs) * 1e3,
        "cpu_us_per_item": statistics.median(r.cpu_s / n for r in runs) * 1e6,
    }


def _check(run: Run, n: int, name: str) -> None:
    if len(run.latencies) != n:
        raise SystemExit(f"{name}: {len(run.latencies)} of {n} items arrived")


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    systems = [s for s in SYSTEMS if s in args.systems]
    for cost_name, cost in COSTS.items():
        n = {"noop": args.n_noop, "100us": args.n_100us, "1ms": args.n_1ms}[cost_name]
        for mode, batch in MODES.items():
            names = [s for s in systems if not (s == "for-loop" and batch != 1)]
            full: dict[str, list[Run]] = {s: [] for s in names}
            for _ in range(args.repeats):
                for s in names:
                    run = SYSTEMS[s](Workload(n, cost, batch))
                    _check(run, n, s)
                    full[s].append(run)
            for s in names:
                row = {
                    "cost": cost_name,
                    "mode": "per-item" if s == "for-loop" else mode,
                    "system": s,
                    "n": n,
                    **_summary(full[s], n),
                }
                rate = row["items_per_s"] / 2
                half_n = max(200, int(rate * args.half_load_s))
                half = []
                for _ in range(args.repeats):
                    run = SYSTEMS[s](Workload(half_n, cost, batch, rate=rate))
                    _check(run, half_n, s)
                    half.append(run)
                row["half_load_rate"] = rate
                row["half_load_p50_ms"] = (
                    statistics.median(_pct(r.latencies, 0.5) for r in half) * 1e3
                )
                row["half_load_p99_ms"] = (
                    statistics.median(_pct(r.latencies, 0.99) for r in half) * 1e3
                )
                rows.append(row)
                print(
                    f"{cost_name:>6} {row['mode']:>9} {s:<27}{row['items_per_s']:>11,.0f}/s "
                    f"p50 {row['p50_ms']:8.3f} p99 {row['p99_ms']:8.3f} ms "
                    f"cpu {row['cpu_us_per_item']:7.2f} us  half-load p99 "
                    f"{row['half_load_p99_ms']:7.3f} ms",
                    flush=True,
                )
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each SAGE row against the for-loop limit and the peers of the same row."""
    out = []
    by = {(r["cost"], r["mode"], r["system"]): r for r in rows}
    for r in rows:
        if not r["system"].startswith("sage"):
            continue
        limit = by.get((r["cost"], "per-item", "for-loop"))
        entry = {"cost": r["cost"], "mode": r["mode"], "system": r["system"]}
        if limit:
            entry["vs_for_loop"] = r["items_per_s"] / limit["items_per_s"]
        for peer in ("threads+Queue(64)", "bytewax"):
            p = by.get((r["cost"], r["mode"], peer))
            if p:
                entry[f"vs_{peer}"] = r["items_per_s"] / p["items_per_s"]
        out.append(entry)
        shown = "  ".join(
            f"{k} {v:5.2f}x" for k, v in entry.items() if k.startswith("vs_")
        )
        print(f"{r['cost']:>6} {r['mode']:>9} {r['system']:<27}{shown}")
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    labels = [f"{c}\n{m}" for c in COSTS for m in MODES]
    systems = sorted({r["system"] for r in rows})
    width = 0.8 / len(systems)
    for k, metric, title in (
        (0, "items_per_s", "throughput (items/s, log)"),
        (1, "half_load_p99_ms", "p99 latency at half load (ms, log)"),
    ):
        ax = axes[k]
        for j, s in enumerate(systems):
            vals = []
            for c in COSTS:
                for m in MODES:
                    mode = "per-item" if s == "for-loop" else m
                    hit = [
                        r
                        for r in rows
                        if (r["cost"], r["mode"], r["system"]) == (c, mode, s)
                    ]
                    vals.append(hit[0][metric] if hit else 0)
            ax.bar([i + j * width for i in range(len(labels))], vals, width, label=s)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle("COMPUTE pipeline: source -> op -> sink, ~800-byte items")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-noop", type=int, default=100_000)
    parser.add_argument("--n-100us", type=int, default=3_000)
    parser.add_argument("--n-1ms", type=int, default=300)
    parser.add_argument(
        "--half-load-s",
        type=float,
        default=0.5,
        help="seconds of paced input per half-load run",
    )
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    parser.add_argument("--out", type=Path, default=Path("bench/results/runtime.json"))
    args = parser.parse_args()
    rows = measure(args)
    table = ratios(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "platform": platform.platform(),
        },
        "repeats": args.repeats,
        "rows": rows,
        "ratios": table,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
