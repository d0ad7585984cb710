"""Mixed LLM + embedding traffic on EMULATED devices: siloed vs unified, equal hardware.

Engines are emulated (``sage engine emulate``, profile ``--profile``): no model runs,
every latency follows the profile's device timing. On N devices (``--devices``, 2
and 4) the same arrival plan is replayed against

* ``siloed``: N/2 devices of LLM engines and N/2 of embedding engines, called
  directly (round-robin per service): no control plane;
* unified: an LLM and an embedding engine co-located on every device behind ``sage
  gateway`` (sharing it in ``--timeslice-ms`` slices, or whole steps in turn with
  ``--sharing turns``), once per request policy (``fifo``, ``priority``, ``slo-aware``,
  ``hybrid`` with the least-load router; ``interference-aware`` with its router;
  ``device-packing``: ``priority`` with the router that packs LLM requests onto the
  fewest devices; ``cost-optimized`` and ``adaptive`` with that router too).

Open-loop arrivals (``poisson`` / ``bursty`` on-off), LLM shares ``--mixes``, loads
``--loads`` as fractions of the siloed layout's estimated capacity. Reported per
point and configuration: p50/p95/p99 per class, SLO attainment, goodput, LLM
tokens/s; ``comparisons`` rows give ``embedding_p99_reduction`` (1 - unified/siloed)
and ``llm_throughput_ratio`` (unified/siloed tokens/s); ``ablation`` adds the
control-plane parts one at a time. Writes JSON + PNG (``--out``).
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
from common import add_smoke_flag, machine_info, smoke_path
from mixed_emu_load import Workload, plan, replay, stats
from mixed_emu_report import ablation, best_policy, comparisons, plot, summarize
from mixed_emu_setup import MODELS, Emulator, Gateways, add_layout_args, layout

HYBRID = {"max_batch": 32, "max_wait_ms": 5}
IA = {
    "max_batch": 32,
    "max_wait_ms": 10,
    "batch_budget_ms": 100,
    "pace_ms": 25,
    "hold_max_ms": 150,
}
COST = {"max_wait_ms": 50, "margin_ms": 10, "initial_batch_ms": 20}
ADAPTIVE = {"window_ms": 500, "policy_configs": {"mixed": HYBRID}}
#: configuration -> (router, policy, policy config); None: siloed (no gateway)
CONFIGS: dict[str, tuple[str, str, dict[str, Any]] | None] = {
    "siloed": None,
    "fifo": ("least-load", "fifo", {}),
    "priority": ("least-load", "priority", {}),
    "slo-aware": ("least-load", "slo-aware", {}),
    "hybrid": ("least-load", "hybrid", HYBRID),
    "interference-aware": ("interference-aware", "interference-aware", IA),
    # priority dispatch; LLM requests packed onto the fewest devices
    "device-packing": ("device-packing", "priority", {}),
    # the other policies with the default router (device-packing)
    "cost-optimized": ("device-packing", "cost-optimized", COST),
    "adaptive": ("device-packing", "adaptive", ADAPTIVE),
}
#: the control plane's parts added one at a time (run at the ablation points)
ABLATION: dict[str, tuple[str, str, dict[str, Any]]] = {
    "hybrid + kv-aware router": ("kv-aware", "hybrid", HYBRID),
    "hybrid + interference-aware router": ("interference-aware", "hybrid", HYBRID),
    "interference-aware policy, least-load router": (
        "least-load",
        "interference-aware",
        IA,
    ),
    "interference-aware, fixed batching": (
        "interference-aware",
        "interference-aware",
        {**IA, "adaptive": False},
    ),
    "interference-aware, no prefill pacing": (
        "interference-aware",
        "interference-aware",
        {**IA, "pace_ms": 0},
    ),
    "interference-aware, engine depth bound 2": (
        "interference-aware",
        "interference-aware",
        {**IA, "engine_depth": 2},
    ),
}
#: fewer generations packed per LLM engine: their tail against the embeddings' (run
#: at every point by default, beside CONFIGS; not candidates for the best policy)
PACKED = {
    f"device-packing (pack limit {n})": (
        f"device-packing:pack_limit={n}",
        "priority",
        {},
    )
    for n in (32, 16)
}
ABLATION.update(PACKED)


def capacity(share: float, n: int, args: argparse.Namespace) -> float:
    """Estimated requests/s the siloed layout sustains at LLM share ``share``."""
    half = max(1, n // 2)
    llm = args.llm_capacity * half / share if share > 0 else float("inf")
    emb = args.emb_capacity * half / (1 - share) if share < 1 else float("inf")
    return min(llm, emb)


def scaled(config: dict[str, Any], scale: float) -> dict[str, Any]:
    """A policy config with its durations (``*_ms``, nested ones too) in wall time."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            value = scaled(value, scale)
        elif key.endswith("_ms"):
            value = value * scale
        out[key] = value
    return out


def run_point(
    reqs: list[Any],
    names: list[str],
    targets: dict[str, dict[str, list[str]]],
    gateways: Gateways,
    args: argparse.Namespace,
) -> dict[str, Any]:
    out = {}
    for name in names:
        config = CONFIGS.get(name) or ABLATION.get(name)
        if config is not None:
            router, policy, policy_config = config
            url = gateways.set_policy(
                router, policy, scaled(policy_config, args.time_scale)
            )
            target = {"llm": [url], "embedding": [url]}
        else:
            target = targets["siloed"]
        results = asyncio.run(replay(reqs, target, MODELS, args.time_scale))
        out[name] = stats(results, args.seconds)
        if config is not None:  # what the policy learned and decided in this run
            described = gateways.policy(config[0])
            if described.get("learned"):
                out[name]["policy_state"] = described["learned"]
            if "switches" in described:
                out[name]["policy_switches"] = [
                    (round(s["at"], 3), s["to"]) for s in described["switches"]
                ]
        time.sleep(args.pause)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", default="2,4")
    parser.add_argument("--patterns", default="poisson,bursty")
    parser.add_argument("--mixes", default="0.9,0.5,0.3", help="LLM shares")
    parser.add_argument("--loads", default="0.8", help="x siloed capacity")
    parser.add_argument("--seconds", type=float, default=8.0, help="emulated seconds")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=2.0,
        help="wall seconds per emulated second (eases a busy host's timing error)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.5)
    add_layout_args(parser)
    parser.add_argument("--configs", default=",".join([*CONFIGS, *PACKED]))
    parser.add_argument(
        "--ablation-at",
        default="bursty,0.3,0.8",
        help="pattern,mix,load of the ablation points ('' = none)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "mixed.json")
    add_smoke_flag(parser)
    args = parser.parse_args()
    # SIGTERM ends the run through the finally blocks: no orphaned engines/gateways
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.smoke:
        args.devices, args.patterns, args.mixes, args.loads = (
            "2",
            "bursty",
            "0.5",
            "0.8",
        )
        args.seconds, args.pause, args.ablation_at = 4.0, 0.2, ""
        args.time_scale = 1.0
        args.out = smoke_path(args.out)
    workload = Workload()
    before = machine_info()
    names = args.configs.split(",")
    known = {**CONFIGS, **ABLATION}
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown configurations {unknown}; known: {list(known)}")
    routers = sorted({c[0] for n in names if (c := known[n])})
    ablate = args.ablation_at.split(",") if args.ablation_at else None
    if ablate:
        routers = sorted(set(routers) | {c[0] for c in ABLATION.values()})
    # the ablation rows not already run at every point
    extra = [n for n in ABLATION if n not in names]
    points: list[dict[str, Any]] = []
    for n in (int(x) for x in args.devices.split(",")):
        how = (args.sharing, args.timeslice_ms)
        siloed = Emulator(layout("siloed", n, args.profile, args.time_scale, *how))
        unified = Emulator(layout("unified", n, args.profile, args.time_scale, *how))
        gateways = Gateways(unified.engines, routers, args.emb_inflight)
        targets = {"siloed": {k: siloed.urls(k) for k in ("llm", "embedding")}}
        try:
            for pattern in args.patterns.split(","):
                for share in (float(s) for s in args.mixes.split(",")):
                    for load in (float(x) for x in args.loads.split(",")):
                        rate = load * capacity(share, n, args)
                        is_ablation = ablate == [pattern, str(share), str(load)]
                        run_names = names + (extra if is_ablation else [])
                        for rep in range(args.repeats):
                            reqs = plan(
                                rate, args.seconds, share, pattern, rep, workload
                            )
                            # the order of configurations rotates per repeat
                            k = rep % len(run_names)
                            order = run_names[k:] + run_names[:k]
                            result = run_point(reqs, order, targets, gateways, args)
                            point = {
                                "devices": n,
                                "pattern": pattern,
                                "mix": f"{round(share * 100)}/{round((1 - share) * 100)}",
                                "load": load,
                                "rate_rps": rate,
                                "repeat": rep,
                                "requests": len(reqs),
                                "configs": result,
                            }
                            points.append(point)
                            show(point)
        finally:
            gateways.stop()
            siloed.stop()
            unified.stop()
    summary = summarize(points)
    result = {
        "benchmark": "mixed-llm-embedding-emulated",
        "emulated": True,
        "engines": f"EMULATED (sage engine emulate, profile {args.profile}); no model ran",
        "note": "Latencies are emulated device time plus the real gateway/client cost on "
        "this machine divided by time_scale (so that cost is understated by that "
        "factor); the machine was shared with other work while it ran. All "
        "configurations of a point replay the same arrival plan back to back.",
        "machine": {"before": before, "after": machine_info()},
        "workload": {k: getattr(workload, k) for k in workload.__slots__},
        "config": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "goal": "unified + best policy: >= 40% lower embedding p99 and higher SLO "
        "attainment than siloed at equal LLM throughput (+-5%), at least on bursty mixes",
        "comparisons": comparisons(summary),
        "ablation": ablation(summary, ablate),
        "policies": best_policy(summary, [n for n in CONFIGS if n != "siloed"]),
        "summary": summary,
        "points": points,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(summary, args.out.with_suffix(".png"))
    for row in result["comparisons"]:
        print(json.dumps(row))


def show(point: dict[str, Any]) -> None:
    head = (
        f"N={point['devices']} {point['pattern']} {point['mix']} load {point['load']}"
    )
    for name, r in point["configs"].items():
        print(
            f"{head} {name}: emb p99 {r['embedding']['p99_ms'] or 0:.0f} ms, llm p99 "
            f"{r['llm']['p99_ms'] or 0:.0f} ms, slo {r['slo_attainment'] or 0:.3f}, "
            f"llm {r['llm']['tokens_per_s']:.0f} tok/s, failed {r['failed']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
