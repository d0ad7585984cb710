"""Emulator validation: the real CPU engines vs ``sage engine emulate`` running a profile
fitted to them, under the same open-loop loads, in the same layouts.

1. Real engines: vLLM CPU with the tiny local Llama (generation) and vLLM pooling with
   all-MiniLM-L6-v2 (embeddings), started as bench-mixed-cpu starts them (or given by
   ``--llm-url``/``--emb-url``), in each layout in turn. A CPU is the device here:
   ``separate`` pins each engine to a CPU of its own, ``shared`` pins both to one
   CPU (they take turns on it as two engines on one GPU do) and the load client to
   the other (``common.engine_cpus``). Unpinned, both engines bind their threads to
   every CPU and spin against each other: embedding p99 of 1-10 s at 2-10 requests/s
   where pinned engines answer in 40-70 ms, which is contention no device model
   describes.
2. Fit: ``fit_profile`` (what ``sage engine fit-profile`` runs) against the first
   layout's engines, each engine measured alone; the profile is written to
   ``--profile-out``.
3. Load: open-loop Poisson arrivals at each ``--rates`` x ``--mixes`` (bench-mixed-cpu's
   request texts, 48 streamed tokens per completion), the same schedule for every
   system. Per request: time to first token (TTFT), time between tokens (TBT, the
   request's median gap) and embedding latency; p50/p99 per run, medians of
   ``--repeats``.
4. The same loads against the emulator running the fitted profile (the real engines
   stopped first), in the same layouts: ``shared`` (both engines on one emulated
   device that, like a CPU core, runs their steps at once at a shared speed:
   ``sharing: processor``; an engine keeps its share for 1 s after its last step,
   as vLLM's CPU worker spin-waits that long, which is what makes two real engines
   on one core each run at about half speed) and ``separate`` (one device each).

Reports each figure's relative error (emulated / real - 1) against the real engines
of the same layout (engines given by URL count for every layout); the goal is within
10%. The emulated rows are emulation and are labelled so.

    python bench/emulator_fit_bench.py --out bench/results/emulator_fit.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (
    OtherLoad,
    add_smoke_flag,
    engine_cpus,
    machine_info,
    percentile,
    pyplot,
    smoke_path,
    spread,
    write_report,
)
from mixed_bench import start_engines
from mixed_emu_setup import Emulator
from mixed_load import schedule

from sage_plugins.emulator.fit import fit_profile

METRICS = ("ttft", "tbt", "embedding")
NO_SLO = {"llm": [1e9], "embedding": [1e9]}
GOAL = 0.10
VLLM_CPU_SPIN_S = 1.0  # vLLM's CPU worker spin-waits this long after each step


async def _completion(
    http: httpx.AsyncClient, url: str, text: str, max_tokens: int
) -> tuple[float, float]:
    """(TTFT s, median gap between tokens s) of one streamed completion."""
    body = {
        "model": "tiny",
        "prompt": text,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    start = time.perf_counter()
    stamps: list[float] = []
    async with http.stream("POST", f"{url}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data: {") and '"choices":[{' in line.replace(" ", ""):
                stamps.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return stamps[0] - start, statistics.median(gaps) if gaps else float("nan")


async def _embedding(http: httpx.AsyncClient, url: str, text: str) -> float:
    start = time.perf_counter()
    resp = await http.post(
        f"{url}/v1/embeddings", json={"model": "minilm", "input": text}
    )
    resp.raise_for_status()
    return time.perf_counter() - start


async def _load(
    urls: dict[str, str], plan: list[tuple[float, str, str, float]], max_tokens: int
) -> dict[str, list[float]]:
    """Fire every request of ``plan`` at its offset; per-request figures by metric."""
    out: dict[str, list[float]] = {m: [] for m in (*METRICS, "failed")}
    limits = httpx.Limits(max_connections=2048, max_keepalive_connections=2048)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:

        async def once(kind: str, text: str) -> None:
            if kind == "llm":
                ttft, tbt = await _completion(http, urls["llm"], text, max_tokens)
                out["ttft"].append(ttft)
                out["tbt"].append(tbt)
            else:
                out["embedding"].append(await _embedding(http, urls["embedding"], text))

        async def fire(offset: float, kind: str, text: str) -> None:
            await asyncio.sleep(max(0.0, begin + offset - time.perf_counter()))
            try:
                await once(kind, text)
            except httpx.TransportError:  # a connection the server dropped: once more
                try:
                    await once(kind, text)
                except httpx.HTTPError as exc:  # counted, never dropped
                    print(f"request failed: {exc!r}", file=sys.stderr)
                    out["failed"].append(1.0)

        begin = time.perf_counter()
        await asyncio.gather(*(fire(t, kind, text) for t, kind, text, _ in plan))
    return out


def warm_up(urls: dict[str, str], max_tokens: int) -> None:
    """Three seconds of mixed load, unmeasured: engines just started answer
    slower for a while (vLLM's pooling runner took 19 ms per short input in a fit
    made right after its start and 16 ms in the loads a minute later)."""
    asyncio.run(_load(urls, schedule(5.0, 3.0, 0.5, 999, NO_SLO), max_tokens))


def measure(
    args: argparse.Namespace, urls: dict[str, str]
) -> tuple[dict[str, dict[str, list[dict[str, float]]]], dict[str, int]]:
    """(load name -> metric -> one {p50_ms, p99_ms} per repeat, load name -> requests
    that failed twice)."""
    warm_up(urls, args.max_tokens)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    failures: dict[str, int] = {}
    for rate in args.rates:
        for share in args.mixes:
            name = f"{rate:g}/s {round(share * 100)}/{round((1 - share) * 100)}"
            per = runs.setdefault(name, {m: [] for m in METRICS})
            for rep in range(args.repeats):
                plan = schedule(rate, args.seconds, share, rep, NO_SLO)
                got = asyncio.run(_load(urls, plan, args.max_tokens))
                failed = len(got.pop("failed"))
                failures[name] = failures.get(name, 0) + failed
                for metric, values in got.items():
                    ok = [v for v in values if not math.isnan(v)]
                    per[metric].append(
                        {
                            "p50_ms": percentile(ok, 0.5) * 1e3,
                            "p99_ms": percentile(ok, 0.99) * 1e3,
                        }
                    )
                time.sleep(args.pause)
            print(f"  {name}: {summarise(per)}", flush=True)
    return runs, failures


def summarise(per: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    return {
        f"{metric}_{q}": spread([r[q] for r in rows])
        for metric, rows in per.items()
        for q in ("p50_ms", "p99_ms")
        if rows
    }


def layout(name: str, profile: Path) -> dict[str, Any]:
    """The emulator config of a layout. Its devices are CPUs: co-located engines
    share them at once (``sharing: processor``), as the OS shares a core, and each
    keeps its share for 1 s after its last step, as vLLM's CPU worker spin-waits
    that long for its next one (``SpinCondition(busy_loop_s=1)`` in vLLM's
    ``shm_broadcast.py``)."""
    llm = {"id": "llm0", "kind": "llm", "model": "tiny"}
    emb = {"id": "emb0", "kind": "embedding", "model": "minilm"}
    cpu = {"sharing": "processor", "idle_spin_s": VLLM_CPU_SPIN_S}
    if name == "shared":
        devices = [{"name": "cpu", **cpu, "engines": [llm, emb]}]
    else:
        devices = [
            {"name": "cpu-llm", **cpu, "engines": [llm]},
            {"name": "cpu-emb", **cpu, "engines": [emb]},
        ]
    return {"profile": str(profile), "devices": devices}


def compare(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per figure of every emulated run against the real run of its layout
    (``real-<layout>``, or ``real`` for engines given by URL)."""
    rows = []
    for system, loads in summary.items():
        if not system.startswith("emulated-"):
            continue
        name = system.removeprefix("emulated-")
        real = summary.get(f"real-{name}", summary.get("real"))
        if real is None:
            continue
        for load, figures in loads.items():
            for key, stat in figures.items():
                got = real[load].get(key, {})
                base = got.get("median")
                if not base:
                    continue
                err = stat["median"] / base - 1
                rows.append(
                    {
                        "layout": name,
                        "load": load,
                        "figure": key,
                        "real_ms": base,
                        "emulated_ms": stat["median"],
                        "error": err,
                        "within_goal": abs(err) <= GOAL,
                        # the real engines' own repeats: how far they reproduce
                        "real_spread": got.get("rel_spread"),
                        "within_real_range": got["min"] <= stat["median"] <= got["max"],
                    }
                )
    return rows


def goal_of(comparisons: list[dict[str, Any]], layouts: list[str]) -> dict[str, Any]:
    """How many figures are within the goal, and within the real repeats' range."""
    errors = [abs(r["error"]) for r in comparisons]
    n = max(1, len(comparisons))
    return {
        "within": GOAL,
        "share_within": sum(r["within_goal"] for r in comparisons) / n,
        "share_within_real_range": sum(r["within_real_range"] for r in comparisons) / n,
        "median_abs_error": statistics.median(errors) if errors else None,
        "worst_abs_error": max(errors) if errors else None,
        "median_real_spread": statistics.median(
            r["real_spread"] for r in comparisons if r["real_spread"] is not None
        )
        if comparisons
        else None,
        "by_layout": {
            name: statistics.median(
                abs(r["error"]) for r in comparisons if r["layout"] == name
            )
            for name in layouts
            if any(r["layout"] == name for r in comparisons)
        },
    }


def plot(summary: dict[str, dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    keys = [f"{m}_{q}" for m in METRICS for q in ("p50_ms", "p99_ms")]
    loads = list(next(iter(summary.values())))
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, key in zip(axes.T.flat, keys, strict=False):
        width = 0.8 / len(summary)
        for i, (system, per) in enumerate(summary.items()):
            stats = [per[load].get(key) for load in loads]
            xs = [j + i * width for j in range(len(loads))]
            med = [s["median"] if s else 0 for s in stats]
            err = [
                [s["median"] - s["min"] if s else 0 for s in stats],
                [s["max"] - s["median"] if s else 0 for s in stats],
            ]
            ax.bar(xs, med, width, yerr=err, capsize=2, label=system)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(loads))], loads)
        ax.set_title(key.replace("_", " "))
        ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("real CPU engines vs EMULATED (fitted profile), median, min-max bars")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def real_runs(
    args: argparse.Namespace, cpus: dict[str, list[int]] | None, fit: bool
) -> tuple[Any, dict[str, int], tuple[dict[str, Any], float] | None, float | None]:
    """The loads against real engines (started on ``cpus``, or given by URL), the
    load client on ``cpus["client"]``; with ``fit``, the profile fitted to them
    first (written to ``--profile-out``) and the seconds the fit took; and the CPU
    share other processes used meanwhile (``OtherLoad``)."""
    servers: list[Any] = []
    fitted, share = None, None
    own = os.sched_getaffinity(0) if cpus else None
    label = "given by URL" if cpus is None and args.llm_url else cpus or "not pinned"
    print(f"real engines ({label})", flush=True)
    try:
        if args.llm_url and args.emb_url:
            urls = {"llm": args.llm_url, "embedding": args.emb_url}
        else:
            urls = start_engines(args, servers, cpus)
        if cpus:
            os.sched_setaffinity(0, cpus["client"])
        if fit:
            warm_up(urls, args.max_tokens)  # the fit sees the engines the loads see
            t0 = time.perf_counter()
            profile = fit_profile(
                urls["llm"],
                urls["embedding"],
                repeats=args.fit_repeats,
                name="cpu-2core-tiny-llama-minilm",
            )
            fitted = profile, time.perf_counter() - t0
            args.profile_out.parent.mkdir(parents=True, exist_ok=True)
            args.profile_out.write_text(json.dumps(profile, indent=2) + "\n")
            print(f"fitted in {fitted[1]:.0f} s: {profile['source']}", flush=True)
        with OtherLoad() as other:
            got, failures = measure(args, urls)
        other.warn("the real engines")
        share = other.share
    finally:
        for server in servers:
            server.stop()
        if own:
            os.sched_setaffinity(0, own)
    return got, failures, fitted, share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm-url")
    parser.add_argument("--emb-url")
    parser.add_argument("--vllm-python", default=sys.executable)
    parser.add_argument("--tiny-model")
    parser.add_argument("--minilm")
    parser.add_argument("--rates", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--mixes", type=float, nargs="+", default=[0.7, 0.5])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit-repeats", type=int, default=3)
    parser.add_argument("--pause", type=float, default=2.0)
    parser.add_argument(
        "--layouts",
        nargs="+",
        choices=["separate", "shared"],
        default=["separate", "shared"],
        help="layouts to run, real and emulated; the profile is fitted in the first",
    )
    parser.add_argument(
        "--profile-out",
        type=Path,
        default=HERE / "results" / "emulator_fit_profile.json",
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "emulator_fit.json"
    )
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.rates, args.mixes, args.seconds, args.max_tokens = [4.0], [0.5], 2.0, 4
        args.repeats, args.fit_repeats, args.pause = 1, 1, 0.2
        args.layouts = ["shared"]
        args.out = smoke_path(args.out)
        args.profile_out = smoke_path(args.profile_out)
    before = machine_info()
    summary: dict[str, dict[str, Any]] = {}
    runs: dict[str, Any] = {}
    failed: dict[str, dict[str, int]] = {}
    pinning: dict[str, Any] = {}
    profile: dict[str, Any] | None = None
    fit_s = 0.0
    other_load: dict[str, float | None] = {}  # CPU share of other processes
    given = bool(args.llm_url and args.emb_url)
    for name in [None] if given else args.layouts:
        system = "real" if name is None else f"real-{name}"
        cpus = None if name is None else engine_cpus(name)
        pinning[system] = cpus or "not pinned"
        got = real_runs(args, cpus, profile is None)
        runs[system], failed[system], fitted, other_load[system] = got
        if fitted is not None:
            profile, fit_s = fitted
    assert profile is not None
    for name in args.layouts:
        print(f"emulated ({name})", flush=True)
        emulator = Emulator(layout(name, args.profile_out))
        try:
            urls = {k: emulator.urls(k)[0] for k in ("llm", "embedding")}
            system = f"emulated-{name}"
            with OtherLoad() as other:
                runs[system], failed[system] = measure(args, urls)
            other.warn("the emulator")
            other_load[system] = other.share
        finally:
            emulator.stop()
    for system, loads in runs.items():
        summary[system] = {load: summarise(per) for load, per in loads.items()}
    comparisons = compare(summary)
    report = {
        "benchmark": "emulator-validation",
        "emulated": "rows named emulated-* are EMULATION with the fitted profile",
        "machine": before,
        "smoke": args.smoke,
        "config": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "pinning": pinning,
        # CPU share other processes used while each system was measured
        "other_cpu_share": other_load,
        "profile": profile,
        "fit_seconds": fit_s,
        "summary": summary,
        "comparisons": comparisons,
        "failed_requests": failed,
        "goal": goal_of(comparisons, args.layouts),
        "runs": runs,
    }
    write_report(args.out, report, lambda png: plot(summary, png))
    for r in comparisons:
        print(
            f"  {r['layout']:9s} {r['load']:12s} {r['figure']:18s} real "
            f"{r['real_ms']:9.1f} ms emulated {r['emulated_ms']:9.1f} ms "
            f"error {r['error']:+.0%}"
        )
    print("goal:", json.dumps(report["goal"]))


if __name__ == "__main__":
    main()
