"""COMPUTE benchmark: SAGE's local runtime against for-loops, threads+Queue, Bytewax.

The paper's COMPUTE pipeline (Source -> ComputeOp -> Sink) with op costs 0, 100 us
and 1 ms (busy loop), int items and RAG-like dict items (~450 bytes), per item
(packets of one item) and batched (64), in one run: items/s, p50/p99 end-to-end
latency and CPU us per item at full speed, then p50/p99 at half load (the source paced
to half of that system's measured rate). Every system runs in turn within each repeat
(the for-loop of the same mode included), so ratios come from interleaved runs;
medians of --repeats with min/max. Like with like: SAGE chained (one fused replica)
against the for-loop of the same mode (per item, or batched with the same per-batch
clock reads and sink calls); SAGE with a thread per replica against threads+Queue and
Bytewax. Writes JSON and a PNG.

    python bench/runtime_bench.py --out bench/results/runtime.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    add_smoke_flag,
    grouped_bars,
    machine_info,
    percentile,
    pyplot,
    smoke_path,
    spread,
)
from runtime_peers import ITEMS, SYSTEMS, Run, Workload

COSTS = {"noop": 0.0, "100us": 100e-6, "1ms": 1e-3}
MODES = {"per-item": 1, "batched": 64}
#: what each SAGE configuration is compared with
PEERS = {
    "sage (chained)": ("for-loop",),
    "sage (thread per replica)": ("threads+Queue(64)", "bytewax"),
}


def _stats(runs: list[Run], n: int) -> dict[str, Any]:
    return {
        "items_per_s": spread([n / r.wall_s for r in runs]),
        "p50_ms": spread([percentile(r.latencies, 0.50) * 1e3 for r in runs]),
        "p99_ms": spread([percentile(r.latencies, 0.99) * 1e3 for r in runs]),
        "cpu_us_per_item": spread([r.cpu_s / n * 1e6 for r in runs]),
    }


def _run(system: str, w: Workload) -> Run:
    run = SYSTEMS[system](w)
    if len(run.latencies) != w.n:
        raise SystemExit(f"{system}: {len(run.latencies)} of {w.n} items arrived")
    return run


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    systems = [s for s in SYSTEMS if s in args.systems]
    for cost_name in args.costs:
        cost = COSTS[cost_name]
        n = {"noop": args.n_noop, "100us": args.n_100us, "1ms": args.n_1ms}[cost_name]
        for item in args.items:
            for mode, batch in MODES.items():
                full: dict[str, list[Run]] = {s: [] for s in systems}
                for _ in range(args.repeats):  # systems in turn within each repeat
                    for s in systems:
                        full[s].append(_run(s, Workload(n, cost, batch, item=item)))
                rates = {s: spread([n / r.wall_s for r in full[s]]) for s in systems}
                half: dict[str, list[Run]] = {s: [] for s in systems}
                half_n = {
                    s: max(50, int(rates[s]["median"] / 2 * args.half_load_s))
                    for s in systems
                }
                for _ in range(args.repeats):
                    for s in systems:
                        rate = rates[s]["median"] / 2
                        w = Workload(half_n[s], cost, batch, rate=rate, item=item)
                        half[s].append(_run(s, w))
                for s in systems:
                    row = {
                        "cost": cost_name,
                        "item": item,
                        "mode": mode,
                        "system": s,
                        "n": n,
                        **_stats(full[s], n),
                        "half_load_rate": rates[s]["median"] / 2,
                        "half_load_n": half_n[s],
                        "half_load_p50_ms": spread(
                            [percentile(r.latencies, 0.5) * 1e3 for r in half[s]]
                        ),
                        "half_load_p99_ms": spread(
                            [percentile(r.latencies, 0.99) * 1e3 for r in half[s]]
                        ),
                    }
                    rows.append(row)
                    print(
                        f"{cost_name:>6} {item:>4} {mode:>9} {s:<26}"
                        f"{row['items_per_s']['median']:>11,.0f}/s "
                        f"(+-{row['items_per_s']['rel_spread']:4.0%}) p50 "
                        f"{row['p50_ms']['median']:8.3f} ms cpu "
                        f"{row['cpu_us_per_item']['median']:7.2f} us  half-load p99 "
                        f"{row['half_load_p99_ms']['median']:7.3f} ms",
                        flush=True,
                    )
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each SAGE row against its like-for-like peers (``PEERS``) of the same cost,
    item and mode, from medians of the same interleaved run."""
    out = []
    by = {(r["cost"], r["item"], r["mode"], r["system"]): r for r in rows}
    for r in rows:
        if r["system"] not in PEERS:
            continue
        key = (r["cost"], r["item"], r["mode"])
        entry: dict[str, Any] = dict(zip(("cost", "item", "mode"), key, strict=True))
        entry["system"] = r["system"]
        for peer in PEERS[r["system"]]:
            p = by.get((*key, peer))
            if p:
                entry[f"vs_{peer}"] = (
                    r["items_per_s"]["median"] / p["items_per_s"]["median"]
                )
        out.append(entry)
        shown = "  ".join(
            f"{k} {v:5.2f}x" for k, v in entry.items() if k.startswith("vs_")
        )
        print(f"{r['cost']:>6} {r['item']:>4} {r['mode']:>9} {r['system']:<26}{shown}")
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()

    items = list(dict.fromkeys(r["item"] for r in rows))
    fig, axes = plt.subplots(len(items), 2, figsize=(15, 5 * len(items)), squeeze=False)
    labels = list(dict.fromkeys((r["cost"], r["mode"]) for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    for row_axes, item in zip(axes, items, strict=True):
        for ax, (metric, title) in zip(
            row_axes,
            (
                ("items_per_s", "throughput (items/s, log)"),
                ("half_load_p99_ms", "p99 latency at half load (ms, log)"),
            ),
            strict=True,
        ):

            def stat(
                group: tuple[str, str],
                system: str,
                item: str = item,
                metric: str = metric,
            ) -> Any:
                hit = [
                    r
                    for r in rows
                    if (r["cost"], r["item"], r["mode"], r["system"])
                    == (group[0], item, group[1], system)
                ]
                return hit[0][metric] if hit else None

            grouped_bars(ax, labels, systems, stat, [f"{c}\n{m}" for c, m in labels])
            ax.set_yscale("log")
            ax.set_title(f"{item} items: {title}")
        row_axes[0].legend(fontsize=8)
    fig.suptitle(
        "COMPUTE pipeline: source -> op -> sink (medians of repeats, min-max bars)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


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
    parser.add_argument("--costs", nargs="+", default=list(COSTS), choices=COSTS)
    parser.add_argument("--items", nargs="+", default=list(ITEMS), choices=ITEMS)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    parser.add_argument("--out", type=Path, default=Path("bench/results/runtime.json"))
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.n_noop, args.n_100us, args.n_1ms = 1, 2_000, 100, 20
        args.half_load_s = 0.05
        args.out = smoke_path(args.out)
    before = machine_info()
    rows = measure(args)
    table = ratios(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {"before": before, "after": machine_info()},
        "repeats": args.repeats,
        "smoke": args.smoke,
        "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "modes": MODES,
        "peers": PEERS,
        "rows": rows,
        "ratios": table,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
