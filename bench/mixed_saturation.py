"""Saturation on EMULATED devices: the load each layout sustains within its targets.

The throughput study of the control plane's claim, beside ``mixed_emu_bench.py``'s
fixed-load comparison. On N emulated devices (``--devices``), per arrival pattern
and LLM share, each configuration (``siloed``, and the unified layout behind ``sage
gateway`` with each policy of ``--configs``) is run at rising loads (``--loads``,
multiples of the siloed layout's estimated capacity, as in ``mixed_emu_bench.py``)
until a class's p95 latency passes its target (the workload's SLO: embeddings
150 ms, LLM completions 4 s) or a request fails; the next loads are then not run
(the load a layout holds is taken to be monotone). Reported per configuration: the
highest load that held, the requests/s and LLM tokens/s served there, and
``capacity_ratio`` = unified over siloed requests/s at their highest held loads.
A configuration that holds at the top load is marked ``censored`` (it may hold
more); one that holds at none reports 0. Every configuration replays the same
arrival plan at a given load. Writes JSON + PNG (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import add_smoke_flag, machine_info, pyplot, smoke_path, write_report
from mixed_emu_bench import CONFIGS, capacity, scaled
from mixed_emu_load import Workload, plan, replay, stats
from mixed_emu_setup import MODELS, Emulator, Gateways, add_layout_args, layout


def held(result: dict[str, Any], w: Workload) -> bool:
    """Both classes' p95 within their targets and no request failed."""
    if result["failed"]:
        return False
    for kind, target in (("llm", w.llm_slo_ms), ("embedding", w.emb_slo_ms)):
        p95 = result[kind]["p95_ms"]
        if result[kind]["requests"] and (p95 is None or p95 > target):
            return False
    return True


def sweep(
    name: str,
    share: float,
    pattern: str,
    n: int,
    target: dict[str, list[str]],
    args: argparse.Namespace,
    w: Workload,
) -> dict[str, Any]:
    """``name``'s runs at rising loads until one does not hold."""
    runs = []
    for load in args.loads:
        rate = load * capacity(share, n, args)
        reqs = plan(rate, args.seconds, share, pattern, 0, w)
        result = stats(
            asyncio.run(replay(reqs, target, MODELS, args.time_scale)), args.seconds
        )
        time.sleep(args.pause)
        ok = held(result, w)
        runs.append(
            {
                "load": load,
                "rate_rps": rate,
                "held": ok,
                "served_rps": sum(result[k]["ok"] for k in ("llm", "embedding"))
                / args.seconds,
                "llm_tokens_per_s": result["llm"]["tokens_per_s"],
                "embedding_p95_ms": result["embedding"]["p95_ms"],
                "llm_p95_ms": result["llm"]["p95_ms"],
                "failed": result["failed"],
            }
        )
        print(
            f"N={n} {pattern} {share:.1f} {name} load {load}: emb p95 "
            f"{result['embedding']['p95_ms'] or 0:.0f} ms, llm p95 "
            f"{result['llm']['p95_ms'] or 0:.0f} ms -> {'held' if ok else 'NOT held'}",
            flush=True,
        )
        if not ok:
            break
    best = [r for r in runs if r["held"]]
    top = best[-1] if best else None
    return {
        "runs": runs,
        "max_load": top["load"] if top else 0.0,
        "max_rps": top["rate_rps"] if top else 0.0,
        "llm_tokens_per_s": top["llm_tokens_per_s"] if top else 0.0,
        "censored": top is not None and top["load"] == args.loads[-1],
    }


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Unified over siloed sustained requests/s, per point and policy."""
    out = []
    for r in rows:
        if r["config"] == "siloed":
            continue
        base = next(
            b
            for b in rows
            if b["config"] == "siloed"
            and (b["devices"], b["pattern"], b["mix"])
            == (r["devices"], r["pattern"], r["mix"])
        )
        out.append(
            {
                **{k: r[k] for k in ("devices", "pattern", "mix", "config")},
                "siloed_max_rps": base["max_rps"],
                "unified_max_rps": r["max_rps"],
                "capacity_ratio": r["max_rps"] / base["max_rps"]
                if base["max_rps"]
                else None,
                "censored": r["censored"] or base["censored"],
            }
        )
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Sustained requests/s per mix, one panel per (devices, pattern)."""
    plt = pyplot()
    panels = sorted({(r["devices"], r["pattern"]) for r in rows})
    configs = list(dict.fromkeys(r["config"] for r in rows))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels), 4), squeeze=False
    )
    width = 0.8 / max(1, len(configs))
    censored = {
        (r["devices"], r["pattern"], r["config"], r["mix"]): r["censored"] for r in rows
    }
    for ax, (n, pattern) in zip(axes[0], panels, strict=True):
        mixes = list(
            dict.fromkeys(
                r["mix"] for r in rows if (r["devices"], r["pattern"]) == (n, pattern)
            )
        )
        for i, name in enumerate(configs):
            by_mix = {
                r["mix"]: r["max_rps"]
                for r in rows
                if (r["devices"], r["pattern"], r["config"]) == (n, pattern, name)
            }
            xs = [x + i * width for x in range(len(mixes))]
            ax.bar(xs, [by_mix.get(m, 0.0) for m in mixes], width, label=name)
            for x, m in zip(xs, mixes, strict=True):
                if censored.get((n, pattern, name, m)):  # held at the top load
                    ax.annotate(">=", (x, by_mix[m]), ha="center", va="bottom")
        ax.set_xticks(
            [x + width * (len(configs) - 1) / 2 for x in range(len(mixes))], mixes
        )
        ax.set_title(
            f"{n} devices, {pattern}: requests/s within p95 targets", fontsize=9
        )
    axes[0][0].legend(fontsize=7)
    fig.suptitle("EMULATED devices: load sustained (x: LLM/embedding mix)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", default="2")
    parser.add_argument("--patterns", default="bursty,poisson")
    parser.add_argument("--mixes", default="0.9,0.5,0.3", help="LLM shares")
    parser.add_argument(
        "--loads",
        default="0.25,0.4,0.6,0.8,1.0,1.25,1.5,1.75,2.0",
        help="x siloed capacity, rising",
    )
    parser.add_argument("--configs", default="siloed,priority,device-packing")
    parser.add_argument("--seconds", type=float, default=8.0, help="emulated seconds")
    parser.add_argument("--time-scale", type=float, default=2.0)
    add_layout_args(parser)
    parser.add_argument("--pause", type=float, default=0.5)
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "mixed-saturation.json"
    )
    add_smoke_flag(parser)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.smoke:
        args.devices, args.patterns, args.mixes = "2", "bursty", "0.5"
        args.loads, args.configs = "0.4,1.0", "siloed,priority"
        args.seconds, args.time_scale = 3.0, 1.0
        args.out = smoke_path(args.out)
    args.loads = sorted(float(x) for x in args.loads.split(","))
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configurations {unknown}; known: {list(CONFIGS)}")
    w = Workload()
    before = machine_info()
    rows: list[dict[str, Any]] = []
    routers = sorted({c[0] for n in names if (c := CONFIGS[n])})
    for n in (int(x) for x in args.devices.split(",")):
        how = (args.sharing, args.timeslice_ms)
        siloed = Emulator(layout("siloed", n, args.profile, args.time_scale, *how))
        unified = Emulator(layout("unified", n, args.profile, args.time_scale, *how))
        gateways = Gateways(unified.engines, routers, args.emb_inflight)
        try:
            for pattern in args.patterns.split(","):
                for share in (float(s) for s in args.mixes.split(",")):
                    for name in names:
                        config = CONFIGS[name]
                        if config is None:
                            target = {k: siloed.urls(k) for k in ("llm", "embedding")}
                        else:
                            router, policy, policy_config = config
                            url = gateways.set_policy(
                                router, policy, scaled(policy_config, args.time_scale)
                            )
                            target = {"llm": [url], "embedding": [url]}
                        found = sweep(name, share, pattern, n, target, args, w)
                        mix = f"{round(share * 100)}/{round((1 - share) * 100)}"
                        rows.append(
                            {
                                "devices": n,
                                "pattern": pattern,
                                "mix": mix,
                                "config": name,
                                **found,
                            }
                        )
        finally:
            gateways.stop()
            siloed.stop()
            unified.stop()
    report = {
        "benchmark": "mixed-saturation-emulated",
        "emulated": True,
        "engines": f"EMULATED (sage engine emulate, profile {args.profile}); no model ran",
        "machine": before,
        "workload": {k: getattr(w, k) for k in w.__slots__},
        "targets": {"embedding_p95_ms": w.emb_slo_ms, "llm_p95_ms": w.llm_slo_ms},
        "config": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "ratios": ratios(rows),
        "rows": rows,
    }
    write_report(args.out, report, lambda png: plot(rows, png))
    for r in ratios(rows):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
