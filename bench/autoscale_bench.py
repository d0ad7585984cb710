"""bench-autoscale: a served pipeline whose operator waits on a slow call (20 ms, as
a remote model would) under open-loop Poisson load above one replica's capacity:
a fixed single replica, a fixed maximum (4) and autoscaling between them
(``--autoscale work=1:4``), same load, same run. Autoscaling runs twice: applied
in place (``job.scale``: only ``work``'s replicas change) and by rolling the job
(a new job at the new parallelism takes over the hub). The roll is forced by
declaring ``work`` stateful, which is the only difference between the two.

The pipeline has a second operator after ``work``, ``engine``, whose ``open``
takes ``--load-s`` seconds (a model load, emulated by sleeping) and whose map is
cheap: a roll loads it again, in place does not. Each configuration serves in this
process (``PipelineServer.serve_in_thread``, the embedded runtime) once every
replica is open, and gets ``--rate`` requests/s for ``--seconds`` (Poisson, the
same seeds) from ``common.open_loop_post`` (latency from each request's scheduled
send time). Reported per configuration: answered requests/s, p50/p99 latency, the
share refused (429), the replicas at the end, the engine loads, and the scale
decisions with their times; the plot shows p99 per second over the run.
Configurations alternate order across ``--repeats``; medians with min-max spread.

Run: ``nox -s bench-autoscale`` (bench/results/autoscale.json + .png);
``nox -s bench-autoscale -- --smoke`` (seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    add_smoke_flag,
    machine_info,
    open_loop_post,
    percentile,
    pyplot,
    smoke_path,
    spread,
    write_report,
)

from sage_core import MapFunction

HERE = Path(__file__).resolve().parent
SERVICE_S = 0.02
#: (replicas of ``work`` at the start, autoscaling range, roll instead of in place)
CONFIGS = {
    "fixed-1": (1, None, False),
    "fixed-4": (4, None, False),
    "autoscale-1:4": (1, (1, 4), False),
    "autoscale-1:4 (roll)": (1, (1, 4), True),
}


def remote_call(item: dict[str, Any]) -> dict[str, Any]:
    """The operator: waits on a slow call (off the CPU), then answers."""
    time.sleep(SERVICE_S)
    return {**item, "done": True}


class Engine(MapFunction):
    """A map whose ``open`` takes ``load_s`` seconds (a model load, emulated by
    sleeping); each load appends its time to the file ``loads``."""

    def __init__(self, load_s: float, loads: str) -> None:
        super().__init__()
        self.load_s, self.loads = load_s, loads

    def open(self, ctx: Any) -> None:
        time.sleep(self.load_s)
        with open(self.loads, "a") as f:
            f.write(f"{time.time()}\n")

    def map(self, item: dict[str, Any]) -> dict[str, Any]:
        return item


def _wait_open(server: Any, timeout: float = 120.0) -> None:
    """Until every replica of the served job is open (its loads are not the
    requests' latency)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reps = server.job.metrics()["replicas"].values()
        if reps and all(r["state"] == "running" for r in reps):
            return
        time.sleep(0.05)
    raise TimeoutError("the served job did not open")


def _environment(runtime: str) -> Any:
    """The embedded runtime, or an in-process Dask cluster of 2 workers whose
    replicas report their metrics every 0.25 s (what the autoscaler samples)."""
    if runtime == "local":
        from sage_core import LocalEnvironment

        return LocalEnvironment("work")
    from sage_core.api.dask_environment import DaskEnvironment

    env = DaskEnvironment("work", n_workers=2, metrics_interval_s=0.25)
    env.client.wait_for_workers(2)
    return env


def serve_once(
    config: str, rate: float, seconds: float, seed: int, load_s: float, runtime: str
) -> dict[str, Any]:
    from sage_core import PipelineServer

    replicas, scale, roll = CONFIGS[config]
    env = _environment(runtime)
    s = env.from_collection([]).map(
        remote_call,
        name="work",
        parallelism=replicas,
        # stateful: cannot change in place, so the server rolls the job
        contract={"state": "stateful"} if roll else None,
    )
    loads = Path(tempfile.mkdtemp()) / "loads"
    loads.touch()
    s.map(Engine, name="engine", load_s=load_s, loads=str(loads)).sink("collect")
    server = PipelineServer(
        env,
        max_in_flight=512,
        autoscale={"work": scale} if scale else None,
        scale_interval_s=0.25,
    )
    with server.serve_in_thread() as url:
        _wait_open(server)
        started = time.time()
        port = int(url.rsplit(":", 1)[1])
        got = asyncio.run(
            open_loop_post(port, "/v1/pipelines/work", [{"x": 1}], rate, seconds, seed)
        )
    if runtime == "dask":
        env.close()
    at = [float(line) for line in loads.read_text().split()]
    got["replicas_at_end"] = server.parallelism["work"]
    got["engine_loads"] = len(at)
    got["engine_loads_while_serving"] = sum(1 for t in at if t > started)
    got["changes"] = list(server.changes)
    got["decisions"] = [d.to_dict() for d in server.scaler.decisions] if scale else []
    return got


def per_second_p99(timeline: list[list[float]], seconds: float) -> list[float | None]:
    out: list[float | None] = []
    for sec in range(int(seconds)):
        lat = [lat for t, lat in timeline if sec <= t < sec + 1]
        out.append(percentile(lat, 0.99) * 1e3 if lat else None)
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (config, row) in enumerate(result["configs"].items()):
        series = row["p99_per_second_ms_first_repeat"]
        ax.plot(range(len(series)), series, marker=".", color=f"C{i}", label=config)
    ax.set(xlabel="second of the run", ylabel="p99 latency (ms, log)", yscale="log",
           title=f"{result['config']['rate']:g} req/s Poisson, 20 ms operator, "
                 f"{result['config']['engine_load_s']:g} s engine load")  # fmt: skip
    ax.legend()
    where = {"local": "embedded runtime", "dask": "Dask, 2 in-process workers"}
    fig.suptitle(
        f"bench-autoscale: served pipeline, {where[result['config']['runtime']]} "
        "(shared box)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_smoke_flag(parser)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--runtime",
        choices=("local", "dask"),
        default="local",
        help="embedded runtime, or an in-process Dask cluster of 2 workers",
    )
    parser.add_argument(
        "--load-s", type=float, default=2.0, help="seconds the engine takes to open"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: results/autoscale.json (autoscale-dask.json with --runtime dask)",
    )
    args = parser.parse_args()
    name = "autoscale.json" if args.runtime == "local" else "autoscale-dask.json"
    out = args.out or HERE / "results" / name
    if args.smoke:
        args.seconds, args.repeats, out = 4.0, 1, smoke_path(out)
        args.load_s = min(args.load_s, 0.5)
    before = machine_info()
    raw: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGS}
    for rep in range(args.repeats):
        order = list(CONFIGS) if rep % 2 == 0 else list(CONFIGS)[::-1]
        for config in order:
            got = serve_once(
                config, args.rate, args.seconds, rep, args.load_s, args.runtime
            )
            raw[config].append(got)
            print(f"rep {rep} {config:14s}: {got['ok_per_s']:.1f} ok/s p50 "
                  f"{got['p50_ms']:.1f} ms p99 {got['p99_ms']:.1f} ms, 429 "
                  f"{got['refused_share']:.2f}, replicas {got['replicas_at_end']}, "
                  f"engine loads while serving {got['engine_loads_while_serving']}",
                  flush=True)  # fmt: skip
    configs = {}
    for config, runs in raw.items():
        configs[config] = {
            "ok_per_s": spread([r["ok_per_s"] for r in runs]),
            "p50_ms": spread([r["p50_ms"] for r in runs]),
            "p99_ms": spread([r["p99_ms"] for r in runs]),
            "refused_share": spread([r["refused_share"] for r in runs]),
            "replicas_at_end": [r["replicas_at_end"] for r in runs],
            "engine_loads_while_serving": [
                r["engine_loads_while_serving"] for r in runs
            ],
            "changes_first_repeat": runs[0]["changes"],
            "decisions_first_repeat": runs[0]["decisions"],
            "p99_per_second_ms_first_repeat": per_second_p99(
                runs[0]["timeline"], args.seconds
            ),
        }
    ratio = {
        "autoscale_vs_fixed1_p99": configs["autoscale-1:4"]["p99_ms"]["median"]
        / configs["fixed-1"]["p99_ms"]["median"],
        "autoscale_vs_fixed4_p99": configs["autoscale-1:4"]["p99_ms"]["median"]
        / configs["fixed-4"]["p99_ms"]["median"],
        "autoscale_vs_fixed4_throughput": configs["autoscale-1:4"]["ok_per_s"]["median"]
        / configs["fixed-4"]["ok_per_s"]["median"],
        "in_place_vs_roll_p99": configs["autoscale-1:4"]["p99_ms"]["median"]
        / configs["autoscale-1:4 (roll)"]["p99_ms"]["median"],
        "in_place_vs_roll_throughput": configs["autoscale-1:4"]["ok_per_s"]["median"]
        / configs["autoscale-1:4 (roll)"]["ok_per_s"]["median"],
    }
    print({k: round(v, 3) for k, v in ratio.items()})
    result = {
        "benchmark": "autoscale",
        "config": {
            "rate": args.rate,
            "seconds": args.seconds,
            "repeats": args.repeats,
            "operator_s": SERVICE_S,
            "engine_load_s": args.load_s,
            "runtime": args.runtime,
            "smoke": args.smoke,
        },
        "machine_before": before,
        "configs": configs,
        "ratios": ratio,
    }
    write_report(out, result, lambda png: plot(result, png))


if __name__ == "__main__":
    main()
