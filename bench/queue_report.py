"""Items/s and ratios from bench/test_queue.py's pytest-benchmark JSON, plus a plot.

python bench/queue_report.py bench/results/queue.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "json", type=Path, help="pytest-benchmark --benchmark-json file"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/queue_summary.json")
    )
    args = parser.parse_args()
    raw = json.loads(args.json.read_text())
    rate: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in raw["benchmarks"]:
        info = bench["extra_info"]
        rate[bench["group"]][info["impl"]] = info["items"] / bench["stats"]["median"]
    rows = []
    print(
        f"{'scenario':<18}{'impl':<20}{'items/s':>12}{'x queue.Queue':>15}{'x deque+Cond':>14}"
    )
    for group in sorted(rate, key=lambda g: (int(g.split("batch")[1]), g)):
        base = rate[group]["queue.Queue"]
        dq = rate[group]["deque+Condition"]
        for impl, r in sorted(rate[group].items(), key=lambda kv: -kv[1]):
            rows.append(
                {
                    "scenario": group,
                    "impl": impl,
                    "items_per_s": r,
                    "vs_queue_Queue": r / base,
                    "vs_deque_condition": r / dq,
                }
            )
            print(f"{group:<18}{impl:<20}{r:>12,.0f}{r / base:>15.2f}{r / dq:>14.2f}")
    summary = {"machine": raw.get("machine_info", {}), "rows": rows}
    args.out.write_text(json.dumps(summary, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(rate, key=lambda g: (int(g.split("batch")[1]), g))
    impls = ["sage", "deque+Condition", "queue.Queue", "queue.Queue-lists"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.2
    for j, impl in enumerate(impls):
        ys = [rate[g].get(impl, 0.0) for g in groups]
        ax.bar([i + j * width for i in range(len(groups))], ys, width, label=impl)
    ax.set_xticks([i + 1.5 * width for i in range(len(groups))], groups)
    ax.set_yscale("log")
    ax.set_ylabel("items/s (median of rounds)")
    ax.set_title("Cross-thread hand-off, capacity 1024")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
