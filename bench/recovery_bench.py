"""Recovery benchmark: what checkpoints cost and how fast a failed job recovers.

Measured in one run, on the local runtime unless said otherwise:

* throughput of the COMPUTE pipeline (range -> 20 us map -> jsonl) and of a keyed
  stateful pipeline (range -> key_by -> running count in managed keyed state ->
  jsonl) with checkpoints off, every 1 s and every 10 s; the modes run in turn
  within each repeat, ratios are medians against "off" of the same repeat;
* checkpoint duration and size against keyed-state size (number of keys);
* recovery: an operator fails once mid-job (restart "fixed(1, 0)", checkpoints every
  1 s): seconds from the failure to the first output of the restarted attempt, and
  to the job's end compared with a failure-free run; items replayed into the sink;
* Dask recovery from ``kill -9``: `sage scheduler` + 3 `sage worker --no-nanny`
  processes, a keyed running count (checkpoints every 0.5 s, restart "fixed(2, 0)");
  the worker hosting the keyed state is killed after the second checkpoint; seconds
  from the kill to the restarted sink's open (detection + re-placement + new actors
  + restore) and to its first new output batch.

    python bench/recovery_bench.py --out bench/results/recovery.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

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

from sage_core import LocalEnvironment, MapFunction, OperatorContext, SinkFunction

MODES: dict[str, float | None] = {"off": None, "1 s": 1.0, "10 s": 10.0}


def busy(x: int, cost_s: float = 20e-6) -> int:
    end = time.perf_counter() + cost_s
    while time.perf_counter() < end:
        pass
    return x


class RunningCount(MapFunction):
    """Running count per key (managed keyed state): ``[key, item, count]``."""

    def __init__(self, keys: int = 1000) -> None:
        super().__init__(keys=keys)
        self.keys = keys

    def open(self, context: OperatorContext) -> None:
        self.counts = context.keyed_state

    def map(self, item: int) -> list[int]:
        k = item % self.keys
        c = self.counts.get(k, 0) + 1
        self.counts[k] = c
        return [k, item, c]


class FailOnce(MapFunction):
    """Raises once on item ``at`` (the first attempt), recording when."""

    failed_at: ClassVar[list[float]] = []

    def __init__(self, at: int = -1) -> None:
        super().__init__(at=at)
        self.at = at

    def map(self, item: int) -> int:
        if item == self.at and not FailOnce.failed_at:
            FailOnce.failed_at.append(time.perf_counter())
            raise RuntimeError("injected failure")
        return busy(item)


class TimedSink(SinkFunction):
    """Counts items (at-least-once) and records when each attempt's first batch came."""

    opened: ClassVar[list[float]] = []
    first: ClassVar[list[float]] = []
    items: ClassVar[list[int]] = [0]

    def open(self, context: OperatorContext) -> None:
        TimedSink.opened.append(time.perf_counter())
        self._first = True

    def sink_batch(self, items: list[Any]) -> None:
        if self._first:
            TimedSink.first.append(time.perf_counter())
            self._first = False
        TimedSink.items[0] += len(items)


def _env(interval: float | None, ckdir: str, **kw: Any) -> LocalEnvironment:
    return LocalEnvironment(
        "bench-recovery", checkpoint_interval_s=interval, checkpoint_dir=ckdir, **kw
    )


def run_pipeline(
    kind: str, n: int, interval: float | None, tmp: Path, keys: int
) -> dict[str, Any]:
    env = _env(interval, str(tmp / "ck"))
    s = env.from_source("range", stop=n)
    if kind == "compute":
        s = s.map(busy, parallelism=2)
    else:
        s = s.key_by(lambda x: x % keys).map(RunningCount, keys=keys, parallelism=2)
    s.sink("jsonl", path=str(tmp / f"{kind}.jsonl"), parallelism=2)
    t0 = time.perf_counter()
    result = env.execute(timeout=600)
    wall = time.perf_counter() - t0
    ck = result.metrics.get("checkpoints", {})
    return {"items_per_s": n / wall, "checkpoints": ck}


def run_recovery(n: int, tmp: Path) -> dict[str, Any]:
    out = {}
    for failing in (False, True):
        FailOnce.failed_at.clear()
        TimedSink.opened.clear()
        TimedSink.first.clear()
        TimedSink.items[0] = 0
        env = _env(1.0, str(tmp / "ck"), restart="fixed(1, 0)")
        at = int(n * 0.6) if failing else -1
        env.from_source("range", stop=n).map(FailOnce, at=at).sink(TimedSink)
        t0 = time.perf_counter()
        env.execute(timeout=600)
        out[failing] = (t0, time.perf_counter())
    t0, end = out[True]
    fail = FailOnce.failed_at[0]
    reopened = [t for t in TimedSink.opened if t > fail]
    first_new = min(t for t in TimedSink.first if t > reopened[0])
    return {
        "to_first_output_s": first_new - fail,
        "extra_wall_s": (end - t0) - (out[False][1] - out[False][0]),
        "items_replayed": TimedSink.items[0] - n,
    }


class SlowMap(MapFunction):
    """Passes items on after ``pause_s`` (keeps a small job running for seconds)."""

    def __init__(self, pause_s: float = 0.0002) -> None:
        super().__init__(pause_s=pause_s)
        self.pause_s = pause_s

    def map(self, item: int) -> int:
        time.sleep(self.pause_s)
        return item


class StampSink(SinkFunction):
    """Appends the wall-clock time of its open and of its first batch to files in
    ``folder`` (the sink runs in a worker process)."""

    def __init__(self, folder: str = "") -> None:
        super().__init__(folder=folder)
        self.folder = Path(folder)

    def _stamp(self, name: str) -> None:
        with (self.folder / name).open("a") as f:
            f.write(f"{time.time()}\n")

    def open(self, context: OperatorContext) -> None:
        self._stamp("opened")
        self._first = True

    def sink_batch(self, items: list[Any]) -> None:
        if self._first:
            self._stamp("first")
            self._first = False


def run_dask_kill(n: int, tmp: Path) -> dict[str, Any]:
    import os
    import signal
    import subprocess

    import cloudpickle
    from distributed import Client

    from sage_core.api.dask_environment import DaskEnvironment

    # the workers rebuild this module's operators from the plan: ship them by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sage = str(Path(sys.executable).parent / "sage")
    stamps = tmp / "stamps"
    stamps.mkdir(parents=True, exist_ok=True)
    sched_file = tmp / "scheduler.json"
    sched_file.unlink(missing_ok=True)
    procs = [
        subprocess.Popen(
            [
                sage,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        while not sched_file.exists():
            time.sleep(0.1)
        time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for name in ("w0", "w1", "w2"):
            workers[name] = subprocess.Popen(
                [
                    sage,
                    "worker",
                    address,
                    "--name",
                    name,
                    "--no-nanny",
                    "--host",
                    "127.0.0.1",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        procs += workers.values()
        with Client(address, timeout=30) as client:
            client.wait_for_workers(3, timeout=120)
            env = DaskEnvironment(
                "bench-kill9",
                client=client,
                checkpoint_interval_s=0.5,
                checkpoint_dir=str(tmp / "ck-dask"),
                restart="fixed(2, 0)",
            )
            s = env.from_source("range", stop=n).map(SlowMap)
            s = s.key_by(lambda x: x % 100).map(
                RunningCount, keys=100, parallelism=2, name="count"
            )
            s.sink(StampSink, folder=str(stamps))
            job = env.submit()
            victim = min(
                p["worker"] for p in job.placement() if p["replica"].startswith("count")
            )
            while job.metrics().get("checkpoints", {}).get("completed", 0) < 2:
                if job.done():
                    raise RuntimeError("the job ended before its second checkpoint")
                time.sleep(0.05)
            killed = time.time()
            os.kill(workers[victim].pid, signal.SIGKILL)
            result = job.wait(timeout=600)
        opened = [float(x) for x in (stamps / "opened").read_text().split()]
        first = [float(x) for x in (stamps / "first").read_text().split()]
        reopened = min(t for t in opened if t > killed)
        return {
            "to_new_actors_s": reopened - killed,
            "to_first_output_s": min(t for t in first if t > reopened) - killed,
            "restarts": float(result.metrics["checkpoints"]["restarts"]),
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, Any] = {"throughput": {}, "state_size": [], "recovery": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for kind in ("compute", "keyed"):
            run_pipeline(kind, args.n // 10, None, tmp, args.keys)  # warm-up
            runs: dict[str, list[float]] = {m: [] for m in MODES}
            ratios: dict[str, list[float]] = {m: [] for m in MODES if m != "off"}
            for _ in range(args.repeats):
                rates = {
                    m: run_pipeline(kind, args.n, iv, tmp, args.keys)["items_per_s"]
                    for m, iv in MODES.items()
                }
                for m, r in rates.items():
                    runs[m].append(r)
                for m, values in ratios.items():
                    values.append(rates[m] / rates["off"])
            table: dict[str, Any] = {m: {"items_per_s": spread(runs[m])} for m in MODES}
            for m, values in ratios.items():
                table[m]["vs_off"] = spread(values)
            rows["throughput"][kind] = table
        for keys in args.state_keys:
            got = [
                run_pipeline("keyed", args.n, 0.2, tmp, keys)["checkpoints"]
                for _ in range(args.repeats)
            ]
            rows["state_size"].append(
                {
                    "keys": keys,
                    "duration_ms": spread([c["last_duration_s"] * 1e3 for c in got]),
                    "bytes": spread([float(c["last_bytes"]) for c in got]),
                }
            )
        rec = [run_recovery(args.n, tmp) for _ in range(args.repeats)]
        rows["recovery"] = {k: spread([float(r[k]) for r in rec]) for k in rec[0]}
        kills = [
            run_dask_kill(args.dask_n, tmp / f"kill{i}") for i in range(args.repeats)
        ]
        rows["dask_kill9"] = {k: spread([r[k] for r in kills]) for k in kills[0]}
    return rows


def plot(rows: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    kinds = list(rows["throughput"])
    grouped_bars(
        a,
        kinds,
        list(MODES),
        lambda k, m: rows["throughput"][k][m]["items_per_s"],
        kinds,
    )
    a.set_ylabel("items/s (median, min-max)")
    a.set_title("throughput by checkpoint interval")
    a.legend()
    sizes = rows["state_size"]
    b.plot(
        [r["keys"] for r in sizes], [r["duration_ms"]["median"] for r in sizes], "o-"
    )
    b.set_xscale("log")
    b.set_xlabel("keys in keyed state")
    b.set_ylabel("checkpoint duration ms (median)")
    b.set_title("checkpoint duration vs state size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/recovery.json"))
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--state-keys", type=int, nargs="+", default=[100, 10_000, 100_000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dask-n", type=int, default=40_000)
    add_smoke_flag(p)
    args = p.parse_args()
    if args.smoke:
        args.n, args.repeats, args.state_keys = 20_000, 1, [100, 10_000]
        args.dask_n = 20_000
        args.out = smoke_path(args.out)
    rows = measure(args)
    report = {
        "machine": machine_info(),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "results": rows,
    }
    write_report(args.out, report, lambda png: plot(rows, png))
    for kind, modes in rows["throughput"].items():
        for m, st in modes.items():
            ratio = f"  x{st['vs_off']['median']:.3f} vs off" if "vs_off" in st else ""
            print(
                f"{kind:8s} checkpoints {m:5s}: {st['items_per_s']['median']:10.0f} items/s{ratio}"
            )
    for r in rows["state_size"]:
        print(
            f"keyed state {r['keys']:>7d} keys: checkpoint {r['duration_ms']['median']:.1f} ms, {r['bytes']['median'] / 1e3:.1f} kB"
        )
    rec = rows["recovery"]
    print(
        f"recovery: first new output {rec['to_first_output_s']['median']:.3f} s after the failure, "
        f"job {rec['extra_wall_s']['median']:.3f} s longer, {rec['items_replayed']['median']:.0f} items replayed"
    )
    k9 = rows["dask_kill9"]
    print(
        f"dask kill -9: new actors {k9['to_new_actors_s']['median']:.2f} s after the kill, "
        f"first new output {k9['to_first_output_s']['median']:.2f} s"
    )


if __name__ == "__main__":
    main()
