"""Dispatch replay, predicted vs measured: a gateway run recorded under ``fifo`` is
replayed under ``priority`` and ``slo-aware`` (``sage explain --dispatch-log``), and
then those policies are run for real on the same requests.

Engine: one emulated LLM engine (``sage engine emulate``, profile
``h100-llama3-8b-e5-mistral-7b`` in real time: results come from emulation) behind
``sage gateway --record-decisions``. Load: ``--n`` chat requests, open loop, Poisson
arrivals at ``--load`` of the engine's capacity (measured first: the mean latency of
requests sent one at a time, times the slots), a fifth of them priority 9 with an SLO
of ``SLO_X`` times that mean, the rest priority 0; ``max_tokens`` uniform in 4..32.
Every run gets the same requests at the same offsets (fixed seed).

Engine slots (``max_inflight``): 1 is the replay's domain (a request's engine time
does not depend on the others); 4 lets the engine batch requests, whose step time then
depends on what runs beside them, which the replay holds fixed.

Per repeat, per slots: run fifo (the recording), replay it under each policy
(predicted; and under fifo itself: the check), run each policy (measured, the waits
its own log records). Error = |predicted - measured| / measured of the queue wait
p50/p99 per priority class (waits under ``FLOOR_MS`` by their absolute error
instead); medians over repeats with min/max.

    python bench/dispatch_replay_bench.py --out bench/results/dispatch_replay.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from common import (
    add_smoke_flag,
    free_port,
    grouped_bars,
    machine_info,
    pyplot,
    smoke_path,
    spread,
    start_gateway,
    wait_ready,
    write_report,
)
from mixed_emu_setup import Emulator

from sage_core.diagnosis.dispatch import class_stats, read_log, replay_dispatch

POLICIES = ("priority", "slo-aware")
SLO_X = 4.0  # priority-9 SLO: this many mean request latencies
MODEL = "llama"
CLASSES = ("chat p0", "chat p9")
STATS = ("wait_p50_ms", "wait_p99_ms")


def requests(n: int, rate: float, slo_ms: float, seed: int) -> list[dict[str, Any]]:
    """Offsets (s), priority, SLO and max_tokens of every request."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        urgent = rng.random() < 0.2
        out.append(
            {
                "at": t,
                "priority": 9 if urgent else 0,
                "slo_ms": slo_ms if urgent else None,
                "max_tokens": rng.randint(4, 32),
            }
        )
    return out


def _body(max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "what is a dataflow plan"}],
        "max_tokens": max_tokens,
    }


async def _send(url: str, plan: list[dict[str, Any]]) -> int:
    """Fire every request at its offset; the number that failed."""
    limits = httpx.Limits(max_connections=len(plan) + 1)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        start = time.monotonic()

        async def one(r: dict[str, Any]) -> bool:
            await asyncio.sleep(max(0.0, start + r["at"] - time.monotonic()))
            headers = {"x-request-priority": str(r["priority"])}
            if r["slo_ms"] is not None:
                headers["x-slo-deadline-ms"] = str(r["slo_ms"])
            answer = await client.post(
                "/v1/chat/completions", json=_body(r["max_tokens"]), headers=headers
            )
            return answer.status_code == 200

        done = await asyncio.gather(*(one(r) for r in plan))
    return sum(not ok for ok in done)


class Gateway:
    """``sage gateway`` over the emulated engine with ``slots``, logging decisions."""

    def __init__(self, engine_url: str, slots: int, policy: str, log: Path) -> None:
        self.port = free_port()
        config = log.with_suffix(".config.json")
        config.write_text(
            json.dumps(
                {
                    "engines": [
                        {
                            "id": "llm0",
                            "url": engine_url,
                            "kind": "llm",
                            "model": MODEL,
                            "max_inflight": slots,
                        }
                    ],
                    "policy": policy,
                    "queue_limits": {"chat": 100000},
                    "queue_timeout_s": 600,
                    "decision_log": str(log),
                }
            )
        )
        self.proc = start_gateway(self.port, config)
        wait_ready(self.port, "/health", timeout=120)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _mean_latency(engine_url: str, tmp: Path, k: int) -> float:
    """Mean latency (s) of ``k`` requests sent one at a time through a gateway."""
    gw = Gateway(engine_url, 1, "fifo", tmp / "calibrate.jsonl")
    try:
        rng, took = random.Random(7), []
        for _ in range(k):
            t0 = time.monotonic()
            r = httpx.post(
                gw.url + "/v1/chat/completions",
                json=_body(rng.randint(4, 32)),
                timeout=60,
            )
            r.raise_for_status()
            took.append(time.monotonic() - t0)
        return statistics.mean(took)
    finally:
        gw.stop()


def _run(
    engine_url: str, slots: int, policy: str, plan: list[dict[str, Any]], log: Path
) -> int:
    gw = Gateway(engine_url, slots, policy, log)
    try:
        failed = asyncio.run(_send(gw.url, plan))
    finally:
        gw.stop()
    return failed


def one_repeat(
    args: argparse.Namespace, engine_url: str, tmp: Path, rep: int, mean_s: float
) -> dict[str, Any]:
    """Every slots setting once: recording, replays, real runs."""
    out: dict[str, Any] = {}
    for slots in args.slots:
        rate = args.load * slots / mean_s
        plan = requests(args.n, rate, SLO_X * mean_s * 1000, seed=rep)
        fifo_log = tmp / f"r{rep}-s{slots}-fifo.jsonl"
        failed = _run(engine_url, slots, "fifo", plan, fifo_log)
        check = replay_dispatch(fifo_log, "fifo")["priorities"]
        row: dict[str, Any] = {
            "rate_per_s": rate,
            "failed": failed,
            "check": {k: v["replayed_recorded_policy"] for k, v in check.items()},
            "recorded_fifo": {k: v["recorded"] for k, v in check.items()},
            "policies": {},
        }
        for policy in POLICIES:
            predicted = replay_dispatch(fifo_log, policy)["priorities"]
            real_log = tmp / f"r{rep}-s{slots}-{policy}.jsonl"
            row["failed"] += _run(engine_url, slots, policy, plan, real_log)
            real = read_log(real_log)
            measured = class_stats(
                real,
                {r.id: r.dispatched for r in real.requests.values()},
                by_priority=True,
            )
            row["policies"][policy] = {
                "predicted": {k: v["replayed"] for k, v in predicted.items()},
                "measured": measured,
            }
        out[str(slots)] = row
        print(f"repeat {rep} slots {slots}: {json.dumps(row['policies'])[:300]}")
    return out


#: waits shorter than this (ms) are compared by absolute error: a relative error of
#: a wait near zero says nothing
FLOOR_MS = 5.0


def _error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured if measured else 0.0


def summarise(runs: list[dict[str, Any]], slots: list[int]) -> dict[str, Any]:
    rows, summary = [], {}
    for s in slots:
        errors, absolute = [], []
        for policy in (*POLICIES, "fifo (check)"):
            for cls in CLASSES:
                for stat in STATS:
                    pred, meas = [], []
                    for run in runs:
                        r = run[str(s)]
                        if policy == "fifo (check)":
                            p, m = r["check"].get(cls), r["recorded_fifo"].get(cls)
                        else:
                            got = r["policies"][policy]
                            p, m = got["predicted"].get(cls), got["measured"].get(cls)
                        if p and m:
                            pred.append(p[stat])
                            meas.append(m[stat])
                    if not pred:
                        continue
                    pairs = list(zip(pred, meas, strict=True))
                    errs = [_error(p, m) for p, m in pairs]
                    off = [abs(p - m) for p, m in pairs]
                    rows.append(
                        {
                            "slots": s,
                            "policy": policy,
                            "class": cls,
                            "stat": stat,
                            "predicted": spread(pred),
                            "measured": spread(meas),
                            "error": spread(errs),
                            "abs_error_ms": spread(off),
                        }
                    )
                    if policy == "fifo (check)":
                        continue
                    if statistics.median(meas) >= FLOOR_MS:
                        errors.append(statistics.median(errs))
                    else:
                        absolute.append(statistics.median(off))
        summary[str(s)] = {
            "median_error": statistics.median(errors) if errors else None,
            "worst_error": max(errors) if errors else None,
            "predictions": len(errors),
            "short_waits": len(absolute),
            "short_waits_worst_abs_error_ms": max(absolute) if absolute else None,
        }
    return {"rows": rows, "summary": summary}


def plot(report: dict[str, Any], png: Path) -> None:
    plt = pyplot()
    slots = report["args"]["slots"]
    fig, axes = plt.subplots(1, len(slots), figsize=(7 * len(slots), 4), squeeze=False)
    for ax, s in zip(axes[0], slots, strict=True):
        rows = [r for r in report["rows"] if r["slots"] == s]
        groups = [(r["policy"], r["class"], r["stat"]) for r in rows]
        by = {(r["policy"], r["class"], r["stat"]): r for r in rows}
        labels = [f"{p}\n{c} {st.split('_')[1]}" for p, c, st in groups]
        grouped_bars(
            ax,
            groups,
            ["predicted", "measured"],
            lambda g, system, by=by: by[g][system],
            labels,
            fontsize=6,
            rotation=60,
        )
        ax.set_title(f"engine slots {s}: queue wait, replay vs real run")
        ax.set_ylabel("ms (median of repeats, min-max)")
        ax.legend(fontsize=7)
    fig.suptitle("Dispatch replay of a fifo recording (emulated engine)")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="requests per run")
    parser.add_argument("--load", type=float, default=0.8, help="share of capacity")
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/dispatch_replay.json")
    )
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.n, args.repeats, args.slots = 24, 1, [1]
        args.out = smoke_path(args.out)
    before = machine_info()
    emulator = Emulator(
        {
            "profile": "h100-llama3-8b-e5-mistral-7b",
            "time_scale": 1.0,
            "devices": [
                {
                    "name": "gpu0",
                    "engines": [{"id": "llm0", "kind": "llm", "model": MODEL}],
                }
            ],
        }
    )
    try:
        engine_url = emulator.urls("llm")[0]
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            mean_s = _mean_latency(engine_url, tmp, 5 if args.smoke else 20)
            runs = [
                one_repeat(args, engine_url, tmp, rep, mean_s)
                for rep in range(args.repeats)
            ]
    finally:
        emulator.stop()
    report = {
        "benchmark": "dispatch-replay",
        "emulated": True,
        "machine": before,
        "smoke": args.smoke,
        "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "mean_request_s": mean_s,
        "slo_ms": SLO_X * mean_s * 1000,
        "runs": runs,
        **summarise(runs, args.slots),
    }
    for s, v in report["summary"].items():
        print(f"slots {s}: median error {v['median_error']}, worst {v['worst_error']}")
    write_report(args.out, report, lambda png: plot(report, png))


if __name__ == "__main__":
    main()
