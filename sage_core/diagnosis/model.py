"""The diagnosis view of one job: tasks, channels, workers and measured service times.

Built from a job record (``sage_core.observe.records``: plan, per-replica counters with
their ``(batch size, seconds)`` samples, sampled traces, duration) or from a plan and
a ``JobResult``. Nothing here reads runtime objects; the simulator and the attribution
read only a ``JobModel``.

Service times of replicas that share a worker process are measured under the
process's GIL: when their summed busy time exceeds the run's duration the worker was
saturated and the samples are scaled down by that excess (``deflation``), so that the
simulator, which serialises them on the worker's slots, does not count contention
twice. A Dask worker's event loop also spends CPU of its own (pickling packets, actor
calls, sockets): the loop's CPU beyond the steps it ran (``overhead_s``, from the
replicas' ``loop_cpu_s`` and ``loop_step_cpu_s``) is taken out of the time the
services had, and the what-if charges it to the packets that cross workers.
Operators whose contract names an ``engine`` (an external server their calls wait
on) are left out of that sum: their service time is the engine's, not the worker's
CPU.
"""

from __future__ import annotations

import bisect
import random
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sage_core.common.errors import SageError
from sage_core.compiler.settings import step_budget_s

#: fewest samples at one batch size for that size to count as measured
MIN_SAMPLES = 3
#: a size's share of the most measured size's samples for it to enter the fit
FIT_SHARE = 0.05


class DiagnosisError(SageError):
    """The job record cannot feed the diagnosis (no run data, unknown operator...)."""


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """Per-batch service seconds, sampled per batch size.

    ``draw(k)`` samples the measured distribution at size ``k`` when there are at
    least ``MIN_SAMPLES`` there; otherwise it scales a sample of the nearest measured
    size by a linear fit ``a + b * size`` of the per-size medians.
    """

    by_size: Mapping[int, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def from_pairs(
        cls, pairs: Sequence[Sequence[float]], scale: float = 1.0
    ) -> ServiceModel:
        by: dict[int, list[float]] = {}
        for size, seconds in pairs:
            by.setdefault(int(size), []).append(float(seconds) * scale)
        return cls({k: tuple(sorted(v)) for k, v in sorted(by.items())})

    @property
    def sizes(self) -> list[int]:
        return [k for k, v in self.by_size.items() if len(v) >= MIN_SAMPLES] or list(
            self.by_size
        )

    def fit(self) -> tuple[float, float]:
        """``(a, b)`` of ``seconds = a + b * size`` over the medians of the sizes with
        at least ``MIN_SAMPLES`` samples and ``FIT_SHARE`` of the most measured
        size's count (of all sizes when none has): three batches of a size the
        run seldom made do not set the slope beside a hundred of the usual one.
        Through the origin when one size is all there is (no fixed cost per batch
        is known)."""
        most = max((len(v) for v in self.by_size.values()), default=0)
        least = max(MIN_SAMPLES, FIT_SHARE * most)
        solid = {k: v for k, v in self.by_size.items() if len(v) >= least}
        pts = [(k, statistics.median(v)) for k, v in (solid or self.by_size).items()]
        if not pts:
            return 0.0, 0.0
        if len({k for k, _ in pts}) == 1:
            k, s = pts[0]
            return 0.0, s / k
        weights = [len(self.by_size[k]) for k, _ in pts]
        w = sum(weights)
        mx = sum(wi * k for wi, (k, _) in zip(weights, pts, strict=True)) / w
        my = sum(wi * s for wi, (_, s) in zip(weights, pts, strict=True)) / w
        sxx = sum(wi * (k - mx) ** 2 for wi, (k, _) in zip(weights, pts, strict=True))
        sxy = sum(
            wi * (k - mx) * (s - my) for wi, (k, s) in zip(weights, pts, strict=True)
        )
        b = max(0.0, sxy / sxx) if sxx else 0.0
        a = my - b * mx
        if a < 0:  # no fixed cost per batch: the line through the origin
            kk = sum(wi * k * k for wi, (k, _) in zip(weights, pts, strict=True))
            ks = sum(wi * k * s for wi, (k, s) in zip(weights, pts, strict=True))
            return 0.0, ks / kk
        return a, b

    def coverage(self, k: int) -> str:
        """``measured``, ``interpolated`` (between measured sizes) or
        ``extrapolated``."""
        sizes = self.sizes
        if not sizes:
            return "extrapolated"
        if k in self.by_size and len(self.by_size[k]) >= MIN_SAMPLES:
            return "measured"
        return "interpolated" if sizes[0] <= k <= sizes[-1] else "extrapolated"

    def mean(self, k: int) -> float:
        got = self.by_size.get(k)
        if got and len(got) >= MIN_SAMPLES:
            return statistics.fmean(got)
        a, b = self.fit()
        return a + b * k

    def draw(self, k: int, rng: random.Random) -> float:
        got = self.by_size.get(k)
        if got and len(got) >= MIN_SAMPLES:
            return got[rng.randrange(len(got))]
        sizes = self.sizes
        if not sizes:
            return 0.0
        i = bisect.bisect_left(sizes, k)
        near = min(sizes[max(0, i - 1) : i + 1], key=lambda s: abs(s - k))
        sample = self.by_size[near][rng.randrange(len(self.by_size[near]))]
        a, b = self.fit()
        base = a + b * near
        return sample * (a + b * k) / base if base > 0 else sample


@dataclass(slots=True)
class TaskModel:
    """One task (operator chain) of the plan with what was measured of it."""

    name: str
    operators: tuple[str, ...]
    role: str
    replicas: list[str]
    service: ServiceModel
    selectivity: float = 1.0
    fill_size: int = 1
    fill_wait_s: float = 0.0
    queue_capacity: int = 0
    #: sources: items per replica, seconds to pull one item, items per packet
    items: int = 0
    pull_s: float = 0.0
    packet: int = 1
    #: sources: seconds to pull a packet, per size (overrides ``pull_s``)
    pull: ServiceModel | None = None
    #: the external engine the head operator's calls run on (``Contract.engine``)
    engine: str | None = None
    #: its steps ran on its Dask worker's event loop, not in a thread of their own
    #: (the runtime moves only long or waiting steps to a thread)
    loop: bool = False

    @property
    def is_source(self) -> bool:
        return self.role == "source"


@dataclass(slots=True)
class ChannelModel:
    """An edge between tasks: router kind and, for keyed edges, the measured share
    of items each downstream replica received."""

    src_task: str
    dst_task: str
    router: str
    keyed: bool = False
    shares: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class JobModel:
    """Everything the simulator and the attribution read about one job."""

    job: str
    runtime: str
    policy: str
    tasks: list[TaskModel]
    channels: list[ChannelModel]
    worker_of: dict[str, str]
    slots: dict[str, int]
    buffer_size: int
    max_packets: int
    duration_s: float
    replicas: Mapping[str, Mapping[str, Any]]
    traces: list[dict[str, Any]]
    record: Mapping[str, Any]
    deflation: dict[str, float] = field(default_factory=dict)
    #: CPU seconds a packet to another worker costs its sender (None: calibrate)
    transport_s: float | None = None
    #: per task: CPU seconds a packet crossing workers costs the worker of this
    #: task's replica at its end (sending or receiving), calibrated with
    #: ``transport_s`` from each worker's loop overhead; empty: ``transport_s``
    #: split between the ends
    end_s: dict[str, float] = field(default_factory=dict)
    #: per worker: its event loop's CPU seconds beyond the steps it ran (Dask)
    overhead_s: dict[str, float] = field(default_factory=dict)
    #: the service a step aims within (``settings.step_budget_s``): a replica's
    #: next step takes as many packets as its last one processed in it (0: always
    #: ``max_packets``)
    step_budget_s: float = 0.0
    #: single-slot workers take turns as the GIL does, a waiting thread letting
    #: the holder run this long (``sys.getswitchinterval()``; 0: processor sharing)
    switch_s: float = 0.0

    def task(self, name: str) -> TaskModel:
        """The task named ``name`` or holding operator ``name``.

        Raises:
            DiagnosisError: no such task or operator.
        """
        for t in self.tasks:
            if name == t.name or name in t.operators:
                return t
        known = sorted({o for t in self.tasks for o in t.operators})
        raise DiagnosisError(
            f"no operator {name!r} in job {self.job}; operators: {', '.join(known)}"
        )

    def downstream(self, task: str) -> list[str]:
        return [c.dst_task for c in self.channels if c.src_task == task]

    def upstream(self, task: str) -> list[str]:
        return [c.src_task for c in self.channels if c.dst_task == task]

    def source_items(self) -> int:
        return sum(t.items * len(t.replicas) for t in self.tasks if t.is_source)

    def measured_throughput(self) -> float:
        """Items out of the sources per second of the run."""
        return self.source_items() / self.duration_s if self.duration_s else 0.0


def _workers(record: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, int]]:
    worker_of: dict[str, str] = {}
    threads: dict[str, int] = {}
    for rep in record["plan"]["replicas"]:
        d = rep["placement"]
        worker_of[rep["id"]] = d["worker"]
        for c in d["candidates"]:
            total = c["free"].get("cpu", 0.0) + c.get("cpu_in_use", 0.0)
            threads[c["worker"]] = max(threads.get(c["worker"], 1), round(total))
    return worker_of, threads


def job_model(record: Mapping[str, Any], *, cores_per_worker: int = 1) -> JobModel:
    """The model of a recorded job.

    Args:
        record: a job record with run data (``metrics``, ``duration_s``).
        cores_per_worker: replicas of one worker process that may compute at once
            (1: Python operators share the process's GIL).

    Raises:
        DiagnosisError: the record has no run data yet.
    """
    if not record.get("metrics") or not record.get("duration_s"):
        raise DiagnosisError(
            f"job {record.get('job')} has no run data in its record yet (status "
            f"{record.get('status', '?')}); it is written when the run ends"
        )
    plan = record["plan"]
    snaps: Mapping[str, Mapping[str, Any]] = record["metrics"]["replicas"]
    duration = float(record["duration_s"])
    worker_of, threads = _workers(record)
    settings = plan["settings"]
    ops = {o["name"]: o for o in plan["operators"]}
    engine_of = {
        t["name"]: ops[t["operators"][0]]["contract"].get("engine")
        for t in plan["tasks"]
    }
    offloaded = {r["id"] for r in plan["replicas"] if engine_of.get(r["task"])}
    overhead = _overhead(snaps, worker_of)
    deflation = _deflation(snaps, worker_of, duration, offloaded, overhead)
    tasks = []
    for t in plan["tasks"]:
        reps = [r for r in plan["replicas"] if r["task"] == t["name"]]
        ids = [r["id"] for r in reps]
        got = [snaps[i] for i in ids if i in snaps]
        pairs = [
            (size, s * (1.0 if i in offloaded else deflation.get(worker_of[i], 1.0)))
            for i in ids
            if i in snaps
            for size, s in snaps[i].get("batch_service", [])
        ]
        head = ops[t["operators"][0]]
        items_in = sum(g["items_in"] for g in got)
        items_out = sum(g["items_out"] for g in got)
        task = TaskModel(
            name=t["name"],
            operators=tuple(t["operators"]),
            role=head["role"],
            replicas=ids,
            service=ServiceModel.from_pairs(pairs),
            selectivity=items_out / items_in
            if items_in and head["role"] != "sink"
            else 1.0,
            fill_size=int(head["contract"].get("batch_size", 1)),
            fill_wait_s=float(head["contract"].get("max_wait_ms", 0.0)) / 1000.0,
            queue_capacity=max((r["queue_capacity"] for r in reps), default=0),
            engine=engine_of[t["name"]],
            loop=_on_loop(got),
        )
        if task.is_source:
            produced = sum(g["operators"][t["operators"][0]]["items_out"] for g in got)
            batches = sum(g["batches"] for g in got) or 1
            pulled = sum(
                g.get("source_s", 0.0) * deflation.get(worker_of[g["replica"]], 1.0)
                for g in got
            )
            task.items = round(produced / max(1, len(ids)))
            task.pull_s = pulled / produced if produced else 0.0
            task.packet = max(1, round(produced / batches))
            if not items_in:
                task.selectivity = 1.0
        tasks.append(task)
    channels = [_channel(c, snaps) for c in plan["channels"]]
    slots = {w: max(1, min(cores_per_worker, n)) for w, n in threads.items()}
    return JobModel(
        job=record["job"],
        runtime=record.get("runtime", "?"),
        policy=plan["policy"],
        tasks=tasks,
        channels=channels,
        worker_of=worker_of,
        slots=slots,
        buffer_size=int(settings["buffer_size"]),
        max_packets=int(settings["max_packets"]),
        switch_s=sys.getswitchinterval(),
        step_budget_s=step_budget_s(
            float(settings.get("linger_ms", 1.0)),
            float(settings.get("latency_target_ms", 5.0)),
        ),
        duration_s=duration,
        replicas=snaps,
        traces=list(record.get("traces") or []),
        record=record,
        deflation=deflation,
        overhead_s=overhead,
    )


def _on_loop(snaps: Sequence[Mapping[str, Any]]) -> bool:
    """Whether most replicas of a task ran their steps on their Dask worker's event
    loop (Dask snapshots say ``offloaded``; a local replica has a thread of its
    own)."""
    flags = [not s["offloaded"] for s in snaps if "offloaded" in s]
    return 2 * sum(flags) > len(flags) > 0


def _overhead(
    snaps: Mapping[str, Mapping[str, Any]], worker_of: Mapping[str, str]
) -> dict[str, float]:
    """Per worker: its event loop's CPU beyond the steps it ran there (replicas of a
    Dask worker share one loop; each reports its CPU since the replica started, the
    longest-lived the most). Empty without those counters (local runs)."""
    loop: dict[str, float] = {}
    steps: dict[str, float] = {}
    for rid, snap in snaps.items():
        if "loop_cpu_s" not in snap:
            continue
        w = worker_of.get(rid, "?")
        loop[w] = max(loop.get(w, 0.0), float(snap["loop_cpu_s"]))
        steps[w] = steps.get(w, 0.0) + float(snap.get("loop_step_cpu_s", 0.0))
    return {w: max(0.0, c - steps[w]) for w, c in loop.items()}


def _deflation(
    snaps: Mapping[str, Mapping[str, Any]],
    worker_of: Mapping[str, str],
    duration: float,
    offloaded: set[str],
    overhead: Mapping[str, float],
) -> dict[str, float]:
    """Per worker: the factor its services' samples are scaled by, so that they fit
    in the run's duration less the worker's own overhead."""
    busy: dict[str, float] = {}
    for rid, snap in snaps.items():
        w = worker_of.get(rid, "?")
        own = 0.0 if rid in offloaded else snap["service_s"]
        busy[w] = busy.get(w, 0.0) + own + snap.get("source_s", 0.0)
    room = {w: max(0.1 * duration, duration - overhead.get(w, 0.0)) for w in busy}
    return {w: min(1.0, room[w] / b) if b > 0 else 1.0 for w, b in busy.items()}


def _channel(
    c: Mapping[str, Any], snaps: Mapping[str, Mapping[str, Any]]
) -> ChannelModel:
    keyed = c.get("key") is not None
    dsts = sorted({d for _, ds in c["routes"] for d in ds})
    shares: dict[str, float] = {}
    if keyed:
        got = {d: snaps[d]["items_in"] for d in dsts if d in snaps}
        total = sum(got.values())
        shares = {d: n / total for d, n in got.items()} if total else {}
    return ChannelModel(c["src_task"], c["dst_task"], c["router"], keyed, shares)


def record_of(plan: Any, result: Any, *, runtime: str = "local") -> dict[str, Any]:
    """A job record (as ``sage run`` writes it) from an ``ExecutionPlan`` and the
    ``JobResult`` of its run: what the Python API hands to the diagnosis."""
    from sage_core.observe.records import run_fields

    return {
        "job": result.job_id,
        "name": plan.job,
        "runtime": runtime,
        "policy": plan.policy,
        "status": result.status,
        "plan": plan.to_dict(),
        **run_fields(result.duration_s, result.metrics, list(result.traces)),
    }


def live_record(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A job record from a scheduler's job-board entry (a running or finished Dask
    job): its latest replica counters over the time since it was submitted."""
    return {
        **entry,
        "metrics": {"replicas": dict(entry.get("replicas") or {})},
        "duration_s": float(entry.get("updated", 0.0))
        - float(entry.get("submitted", 0.0)),
        "traces": list(entry.get("traces") or []),
    }
