"""Items/s and ratios from bench/test_queue.py's pytest-benchmark JSON, plus a plot.

The headline ratio of each scenario compares like with like: with batch 1, SAGE's queue
against ``queue.Queue`` fed item by item; with batches, against ``queue.Queue`` carrying
one list per put (``queue.Queue-lists``). The ratio against ``queue.Queue`` fed item by
item is kept as a secondary column. Every rate is the median of the rounds, with the
min-max spread (items / slowest round, items / fastest round).

python bench/queue_report.py bench/results/queue.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_smoke_flag, errorbar_args, machine_info, pyplot, smoke_path

IMPLS = ["sage", "deque+Condition", "queue.Queue", "queue.Queue-lists"]


def rate_stats(bench: dict[str, Any]) -> dict[str, float]:
    """Items/s of one benchmark: median of rounds with min-max and relative spread."""
    items = bench["extra_info"]["items"]
    stats = bench["stats"]
    med = items / stats["median"]
    lo, hi = items / stats["max"], items / stats["min"]
    return {
        "median": med,
        "min": lo,
        "max": hi,
        "rel_spread": (hi - lo) / med,
        "repeats": stats["rounds"],
    }


def peer_of(group: str) -> str:
    """The like-for-like peer of a scenario: per-item Queue, or Queue of lists."""
    return "queue.Queue" if group.endswith("batch1") else "queue.Queue-lists"


def summarise(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (scenario, implementation) with rates and ratios."""
    rate: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    load: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for bench in raw["benchmarks"]:
        info = bench["extra_info"]
        rate[bench["group"]][info["impl"]] = rate_stats(bench)
        load[bench["group"]][info["impl"]] = info.get("load_avg", [])
    rows = []
    for group in sorted(rate, key=lambda g: (int(g.split("batch")[1]), g)):
        peer = rate[group][peer_of(group)]["median"]
        per_item = rate[group]["queue.Queue"]["median"]
        dq = rate[group]["deque+Condition"]["median"]
        for impl, r in sorted(rate[group].items(), key=lambda kv: -kv[1]["median"]):
            rows.append(
                {
                    "scenario": group,
                    "impl": impl,
                    "items_per_s": r["median"],
                    "items_per_s_spread": r,
                    "peer": peer_of(group),
                    "vs_peer": r["median"] / peer,
                    "vs_queue_Queue_per_item": r["median"] / per_item,
                    "vs_deque_condition": r["median"] / dq,
                    "load_avg_after": load[group][impl],
                }
            )
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()

    groups = list(dict.fromkeys(r["scenario"] for r in rows))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.2
    for j, impl in enumerate(IMPLS):
        xs, stats = [], []
        for i, g in enumerate(groups):
            row = next(
                (r for r in rows if r["scenario"] == g and r["impl"] == impl), None
            )
            if row is not None:
                xs.append(i + j * width)
                stats.append(row["items_per_s_spread"])
        ax.bar(
            xs,
            [s["median"] for s in stats],
            width,
            label=impl,
            **errorbar_args(stats),
        )
    ax.set_xticks([i + 1.5 * width for i in range(len(groups))], groups)
    ax.set_yscale("log")
    ax.set_ylabel("items/s (median of rounds, min-max bars)")
    ax.set_title("Cross-thread hand-off, capacity 1024")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "json", type=Path, help="pytest-benchmark --benchmark-json file"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/queue_summary.json")
    )
    add_smoke_flag(parser)
    args = parser.parse_args()
    out = smoke_path(args.out) if args.smoke else args.out
    raw = json.loads(args.json.read_text())
    rows = summarise(raw)
    print(
        f"{'scenario':<16}{'impl':<20}{'items/s':>12}{'spread':>8}"
        f"{'x peer':>8}{'x per-item Queue':>18}{'x deque':>9}"
    )
    for r in rows:
        print(
            f"{r['scenario']:<16}{r['impl']:<20}{r['items_per_s']:>12,.0f}"
            f"{r['items_per_s_spread']['rel_spread']:>8.0%}{r['vs_peer']:>8.2f}"
            f"{r['vs_queue_Queue_per_item']:>18.2f}{r['vs_deque_condition']:>9.2f}"
        )
    summary = {
        "machine": {**raw.get("machine_info", {}), **machine_info()},
        "headline": "vs_peer: batch 1 against queue.Queue item by item; batches "
        "against queue.Queue carrying one list per put",
        "smoke": args.smoke,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
