"""Event-time benchmark: windowed aggregate and interval join, SAGE against Bytewax.

One input for every system: N events over K keys, one per time unit, shuffled within
a bounded disorder D (max_lateness = D, so nothing is late). Measured in turn within
each repeat (medians of --repeats with min/max):

* windowed aggregate (tumbling size 10, sum per key): SAGE's ``window`` operator
  called directly, the same through a LocalEnvironment pipeline (source -> key_by ->
  window -> sink), and Bytewax ``fold_window`` (TumblingWindower + EventClock whose
  watermark moves with event time only), run_main, one worker;
* two-stream join (half the events on each side, every left item with a right
  partner 2 units later): SAGE's ``interval-join`` (|dt| <= 5) directly and through a
  pipeline, and Bytewax ``join_window`` over tumbling windows of 10 (Bytewax has no
  interval join; the closest windowed join, so the work differs: said in the JSON).

Also recorded: the window sums agree between SAGE and Bytewax, and memory bounded by
the watermark (the most open windows / buffered join items seen by the operator).

    python bench/windows_bench.py --out bench/results/windows.json
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    add_smoke_flag,
    grouped_bars,
    machine_info,
    pyplot,
    smoke_path,
    spread,
    write_report,
)

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
SIZE, LOWER, UPPER = 10, -5, 5


def make_events(n: int, keys: int, disorder: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    xs = [{"k": f"k{i % keys}", "ts": i, "v": rng.randint(0, 99)} for i in range(n)]
    xs.sort(key=lambda x: x["ts"] + rng.randint(0, disorder))
    return xs


def _batches(xs: list[Any], size: int = 256) -> list[list[Any]]:
    return [xs[i : i + size] for i in range(0, len(xs), size)]


# -- windowed aggregate ---------------------------------------------------------------


def sage_window_direct(xs: list[dict[str, Any]], lateness: int) -> dict[str, Any]:
    from sage_plugins.streams import Window

    op = Window(
        key="k", size=SIZE, aggregate="sum", value_field="v", max_lateness=lateness
    )
    out: list[Any] = []
    peak = 0
    for b in _batches(xs):
        out += op.flat_map_batch(b)
        peak = max(peak, sum(len(w) for w in op.open_windows.values()))
    out += op.flush()
    return {
        "sums": {(r["key"], r["window_start"]): r["value"] for r in out},
        "peak": peak,
    }


def sage_window_pipeline(xs: list[dict[str, Any]], lateness: int) -> dict[str, Any]:
    from sage_core import LocalEnvironment

    env = LocalEnvironment("windows", buffer_size=256, trace_every=0)
    closing = [{"k": k, "ts": 10**12, "v": 0} for k in sorted({x["k"] for x in xs})]
    env.from_collection(xs + closing).key_by("k").window(
        size=SIZE, max_lateness=lateness
    ).aggregate("sum", value_field="v", parallelism=1).collect(name="out")
    out = env.execute(timeout=600).collected("out")
    return {"sums": {(r["key"], r["window_start"]): r["value"] for r in out}}


def _bytewax_run(build: Callable[[Any], Any]) -> list[Any]:
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, run_main

    got: list[Any] = []
    flow = Dataflow("windows")
    import bytewax.operators as bop

    bop.output("out", build(flow), TestingSink(got))
    run_main(flow)
    return got


def _clock(lateness: int) -> Any:
    from bytewax.operators.windowing import EventClock

    return EventClock(
        lambda x: EPOCH + timedelta(seconds=x["ts"]),
        wait_for_system_duration=timedelta(seconds=lateness),
        now_getter=lambda: EPOCH,  # the watermark follows event time only
        to_system_utc=lambda t: None,
    )


def bytewax_window(xs: list[dict[str, Any]], lateness: int) -> dict[str, Any]:
    import bytewax.operators as bop
    import bytewax.operators.windowing as win
    from bytewax.testing import TestingSource

    windower = win.TumblingWindower(length=timedelta(seconds=SIZE), align_to=EPOCH)

    def build(flow: Any) -> Any:
        keyed = bop.key_on(
            "key", bop.input("in", flow, TestingSource(xs, 256)), lambda x: x["k"]
        )
        out = win.fold_window(
            "sum",
            keyed,
            _clock(lateness),
            windower,
            lambda: 0,
            lambda acc, x: acc + x["v"],
            lambda a, b: a + b,
        )
        return out.down

    got = _bytewax_run(build)
    return {"sums": {(k, wid * SIZE): v for k, (wid, v) in got}}


# -- two-stream join ------------------------------------------------------------------


def _sides(xs: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """Half the events on the left; each has a right partner 2 time units later
    (same key), in the same arrival order: N events in all."""
    left = xs[0::2]
    return left, [{**x, "ts": x["ts"] + 2} for x in left]


def sage_join_direct(xs: list[dict[str, Any]], lateness: int) -> dict[str, Any]:
    from sage_plugins.streams import IntervalJoin

    op = IntervalJoin(
        left_key="k", right_key="k", lower=LOWER, upper=UPPER, max_lateness=lateness
    )
    left, right = _sides(xs)
    n, peak = 0, 0
    for bl, br in zip(_batches(left), _batches(right), strict=False):
        n += len(op.co_map_batch(bl, 0)) + len(op.co_map_batch(br, 1))
        peak = max(peak, op.buffered())
    return {"pairs": n, "peak": peak}


def sage_join_pipeline(xs: list[dict[str, Any]], lateness: int) -> dict[str, Any]:
    from sage_core import LocalEnvironment

    env = LocalEnvironment("join", buffer_size=256, trace_every=0)
    left, right = _sides(xs)
    a = env.from_collection(left).key_by("k")
    b = env.from_collection(right).key_by("k")
    a.interval_join(
        b, lower=LOWER, upper=UPPER, max_lateness=lateness, parallelism=1
    ).sink("collect", name="out")
    return {"pairs": len(env.execute(timeout=600).collected("out"))}


def bytewax_join(xs: list[dict[str, Any]], lateness: int) -> dict[str, Any]:
    import bytewax.operators as bop
    import bytewax.operators.windowing as win
    from bytewax.testing import TestingSource

    left, right = _sides(xs)
    windower = win.TumblingWindower(length=timedelta(seconds=SIZE), align_to=EPOCH)

    def build(flow: Any) -> Any:
        ka = bop.key_on(
            "a", bop.input("a_in", flow, TestingSource(left, 256)), lambda x: x["k"]
        )
        kb = bop.key_on(
            "b", bop.input("b_in", flow, TestingSource(right, 256)), lambda x: x["k"]
        )
        out = win.join_window(
            "join", _clock(lateness), windower, ka, kb, insert_mode="product"
        )
        return out.down

    return {"pairs": len(_bytewax_run(build))}


TASKS: dict[str, dict[str, Callable[[list[Any], int], dict[str, Any]]]] = {
    "windowed sum": {
        "sage window (operator)": sage_window_direct,
        "sage window (pipeline)": sage_window_pipeline,
        "bytewax fold_window": bytewax_window,
    },
    "two-stream join": {
        "sage interval-join (operator)": sage_join_direct,
        "sage interval-join (pipeline)": sage_join_pipeline,
        "bytewax join_window": bytewax_join,
    },
}
PEER = {"windowed sum": "bytewax fold_window", "two-stream join": "bytewax join_window"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/windows.json"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--disorder", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.events, args.repeats = 5_000, 1
        args.out = smoke_path(args.out)
    xs = make_events(args.events, args.keys, args.disorder, seed=1)
    before = machine_info()
    walls: dict[str, dict[str, list[float]]] = {
        t: {s: [] for s in ss} for t, ss in TASKS.items()
    }
    checks: dict[str, Any] = {}
    for systems in TASKS.values():  # imports and first-call costs stay out
        for fn in systems.values():
            fn(xs[:500], args.disorder)
    for _ in range(args.repeats):
        for task, systems in TASKS.items():
            for system, fn in systems.items():
                t0 = time.perf_counter()
                got = fn(xs, args.disorder)
                walls[task][system].append(time.perf_counter() - t0)
                checks.setdefault(task, {})[system] = {
                    k: v for k, v in got.items() if k != "sums"
                }
                if "sums" in got:
                    checks[task][system]["windows"] = len(got["sums"])
                    checks[task][system]["total"] = sum(got["sums"].values())
    sums = {s: c["total"] for s, c in checks["windowed sum"].items()}
    if len(set(sums.values())) != 1:
        raise SystemExit(f"window sums disagree between systems: {sums}")
    results: dict[str, Any] = {}
    for task, systems in walls.items():
        peer = spread([args.events / w for w in systems[PEER[task]]])
        results[task] = {}
        for system, ws in systems.items():
            rate = spread([args.events / w for w in ws])
            results[task][system] = {
                "events_per_s": rate,
                "ratio_vs_peer": rate["median"] / peer["median"],
                **checks[task][system],
            }
            print(
                f"{task:16s} {system:32s} {rate['median']:>11,.0f} events/s "
                f"({rate['median'] / peer['median']:.2f}x {PEER[task]})"
            )
    report = {
        "benchmark": "windows",
        "config": {
            "events": args.events,
            "keys": args.keys,
            "disorder": args.disorder,
            "max_lateness": args.disorder,
            "window_size": SIZE,
            "join_interval": [LOWER, UPPER],
            "repeats": args.repeats,
            "smoke": args.smoke,
        },
        "notes": "Bytewax has no interval join: its row is join_window over tumbling "
        "windows of 10 (product mode), a different join; the ratio compares the "
        "closest operators on the same input, not the same result.",
        "machine_before": before,
        "machine_after": machine_info(),
        "results": results,
    }
    write_report(args.out, report, lambda png: _plot(results, png))


def _plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4))
    for ax, (task, systems) in zip(axes, results.items(), strict=True):
        names = list(systems)
        grouped_bars(
            ax, [task], names, lambda g, s: results[g][s]["events_per_s"], [task]
        )
        ax.set_ylabel("events/s (median, min-max)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
