"""What-if: the predicted throughput, latency and utilisation of a changed plan.

A change is ``OP.parallelism=N``, ``OP.batch_size=B`` (the head's batch fill target),
``OP.queue_capacity=N``, ``queue_capacity=N`` (every queue), ``buffer_size=N`` (items
per packet), a placement policy and/or a number of workers. The recorded job's model
is changed accordingly (replicas re-placed with the policy's own decisions when the
policy or the workers change) and simulated; the baseline model is simulated too and
the seconds the baseline run took beyond its model (start-up, transport, event loops:
``calibration.unmodelled_s``) are added to the changed plan's modelled duration, and
its latencies are scaled by how far the modelled baseline's latency is from the
sampled traces' (the median of the measured/modelled ratios at the quantiles 0.5 to
0.99: a short run's trace p99 alone rests on a handful of traces). The ratio at the
p99 alone (``latency_scales``, where enough traces measure it) is reported beside
it as ``calibration.p99_tail``: it predicted no better on the COMPUTE benchmark and
worse on RAG and MIXED. On
several workers, that time is first charged to the packets crossing workers
(``calibrate_transport``), so plans sending fewer of them (bigger packets, fewer
workers) are predicted to gain it back.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sage_core.diagnosis.model import DiagnosisError, JobModel
from sage_core.diagnosis.replay import place, recorded_cluster, workers_named
from sage_core.diagnosis.results import merged
from sage_core.diagnosis.sim import QUANTILES, SimResult, percentile, simulate

#: simulated items per source at most (longer runs are sampled down)
MAX_ITEMS = 40_000
#: a shorter run is simulated with several seeds, up to this many items in all
#: (a 240-item run draws an operator's service some 30 times: one rare slow
#: sample more or less moves its prediction by 15%)
MIN_SIM_ITEMS = 2_000
MAX_SEEDS = 8
#: traces beyond a latency quantile for the baseline's own ratio there to
#: calibrate the model's (``latency_scales``)
TAIL_TRACES = 8
KNOBS = ("parallelism", "batch_size", "queue_capacity")
GLOBAL = ("queue_capacity", "buffer_size")


@dataclass(frozen=True, slots=True)
class Change:
    """``OP.knob=value`` (``op`` None for a job-wide knob)."""

    op: str | None
    knob: str
    value: int

    @classmethod
    def parse(cls, text: str) -> Change:
        """``Change`` from ``OP.knob=N`` or ``knob=N``.

        Raises:
            DiagnosisError: not of that form, unknown knob, or not a positive int.
        """
        name, sep, raw = text.partition("=")
        op, _, knob = name.rpartition(".")
        ok = knob in KNOBS if op else knob in GLOBAL
        if not sep or not ok:
            raise DiagnosisError(
                f"cannot read change {text!r}: use OP.parallelism=N, OP.batch_size=B, "
                "OP.queue_capacity=N, queue_capacity=N or buffer_size=N"
            )
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise DiagnosisError(f"change {text!r}: the value must be an integer >= 1")
        return cls(op or None, knob, value)

    def __str__(self) -> str:
        return (
            f"{self.op}.{self.knob}={self.value}"
            if self.op
            else (f"{self.knob}={self.value}")
        )


def apply(
    model: JobModel,
    changes: Sequence[Change] = (),
    *,
    policy: str | None = None,
    workers: int | None = None,
    cores_per_worker: int = 1,
) -> JobModel:
    """A copy of ``model`` with ``changes``, re-placed when ``policy``/``workers``
    are given (or new replicas need a worker).

    Raises:
        DiagnosisError: unknown operator, or the policy cannot place the plan.
    """
    m = copy.copy(model)
    m.tasks = [copy.copy(t) for t in model.tasks]
    m.channels = [copy.copy(c) for c in model.channels]
    m.worker_of = dict(model.worker_of)
    m.slots = dict(model.slots)
    sizes: dict[str, int] = {}
    for c in changes:
        if c.op is None:
            if c.knob == "buffer_size":
                m.buffer_size = c.value
                for t in m.tasks:
                    if t.is_source:
                        t.packet = c.value
            else:
                for t in m.tasks:
                    t.queue_capacity = 0 if t.is_source else c.value
            continue
        t = m.task(c.op)
        if c.knob == "parallelism":
            sizes[t.name] = c.value
        elif c.knob == "batch_size":
            t.fill_size = c.value
            t.fill_wait_s = t.fill_wait_s or 0.005
        elif not t.is_source:
            t.queue_capacity = c.value
    for t in m.tasks:
        if t.name in sizes:
            if t.is_source:
                total = t.items * len(t.replicas)
                t.items = max(1, total // sizes[t.name])
            t.replicas = [f"{t.name}#{i}" for i in range(sizes[t.name])]
    for ch in m.channels:
        if ch.dst_task in sizes:
            ch.shares = _reshare(ch.shares, m.task(ch.dst_task).replicas)
    if (
        policy
        or workers
        or any(r not in m.worker_of for t in m.tasks for r in t.replicas)
    ):
        _replace(m, sizes, policy, workers, cores_per_worker)
    return m


def _reshare(shares: Mapping[str, float], replicas: list[str]) -> dict[str, float]:
    """Key shares over a new replica count: the measured skew (hottest share over
    fair share) kept on the first replica, the rest spread evenly."""
    if not shares or len(replicas) == 1:
        return {r: 1.0 / len(replicas) for r in replicas}
    hot = max(shares.values()) * len(shares) / len(replicas)
    hot = min(1.0, max(hot, 1.0 / len(replicas)))
    rest = (1.0 - hot) / (len(replicas) - 1)
    return {r: hot if i == 0 else rest for i, r in enumerate(replicas)}


def _replace(
    m: JobModel,
    sizes: Mapping[str, int],
    policy: str | None,
    workers: int | None,
    cores: int,
) -> None:
    plan = m.record["plan"]
    chosen = policy or m.policy
    if workers:
        cluster = workers_named([f"worker-{i}" for i in range(workers)], cores)
        if chosen == "local":
            chosen = "round-robin"
        m.slots = {w.name: cores for w in cluster.workers}
    else:
        cluster = recorded_cluster(m.record)
    decisions = place(plan, cluster, chosen, parallelism=sizes)
    m.worker_of = {d["replica"]: d["worker"] for d in decisions}
    m.policy = chosen
    for w in set(m.worker_of.values()) - set(m.slots):
        m.slots[w] = cores


def _run(model: JobModel, seed: int, host_cores: int | None) -> SimResult:
    """The model simulated: sampled down to ``MAX_ITEMS``, or, when short, with
    seeds ``seed``, ``seed + 1``, ... until ``MIN_SIM_ITEMS`` items in all
    (``results.merged``)."""
    m = model
    items = model.source_items()
    if items > MAX_ITEMS:
        m = copy.copy(model)
        m.tasks = [copy.copy(t) for t in model.tasks]
        for t in m.tasks:
            if t.is_source:
                t.items = max(1, t.items * MAX_ITEMS // items)
    seeds = min(MAX_SEEDS, max(1, -(-MIN_SIM_ITEMS // max(1, items))))
    return merged(
        [simulate(m, seed=seed + i, host_cores=host_cores) for i in range(seeds)]
    )


def validity(model: JobModel, result: SimResult) -> list[str]:
    """Notes on where the prediction leaves the measured domain."""
    notes = []
    for t in model.tasks:
        if t.is_source and not t.service.by_size:
            continue
        seen = result.operators[t.name]["batch_sizes"]
        out = {t.service.coverage(k) for k in seen} - {"measured"}
        if not out:
            continue
        have = t.service.sizes
        span = f"{have[0]}..{have[-1]}" if have else "none"
        kind = "extrapolated" if "extrapolated" in out else "interpolated"
        notes.append(
            f"{t.name}: service at batch sizes {seen[0]}..{seen[-1]} {kind} "
            f"from measured sizes {span}"
        )
    for t in model.tasks:
        load = result.operators[t.name].get("engine_items")
        if t.engine and load and t.service.coverage(load) == "extrapolated":
            have = t.service.sizes
            notes.append(
                f"{t.name}: its engine had up to {load} items in calls at once; how "
                f"it batches them is extrapolated from calls of "
                f"{have[0]}..{have[-1]} items"
            )
    return notes


def calibrate_transport(
    model: JobModel, seed: int = 0, host_cores: int | None = None
) -> float:
    """CPU seconds per packet sent to another worker: the workers' measured loop
    overhead (``JobModel.overhead_s``) over the packets that crossed workers; without
    it, what makes the modelled baseline last as long as the recorded run (0 when no
    packet crosses workers or the model is not faster than the run). Computed once
    and kept on ``model``."""
    if model.transport_s is not None:
        return model.transport_s
    model.transport_s = 0.0
    items = model.source_items()
    base = _run(model, seed, host_cores)
    if not base.throughput or not base.cross_packets:
        return 0.0
    simulated = base.throughput * base.makespan_s
    if model.overhead_s:
        crossed = sum(base.cross_packets.values()) * items / simulated
        model.transport_s = sum(model.overhead_s.values()) / crossed
        model.end_s = _end_costs(model, base, items / simulated)
        return model.transport_s
    busiest = max(base.cross_packets.values()) * items / simulated
    extra = model.duration_s - items / base.throughput
    if extra <= 0 or not busiest:
        return 0.0
    cost = extra / busiest
    model.transport_s = cost
    again = _run(model, seed, host_cores)
    added = items / again.throughput - items / base.throughput
    if added > 0:  # one secant step: workers send in parallel, with service
        cost *= min(10.0, extra / added)
    model.transport_s = cost
    return cost


def _end_costs(model: JobModel, base: SimResult, scale: float) -> dict[str, float]:
    """Per task: its worker's loop overhead over the packets that crossed workers
    there in the modelled baseline (``scale``: recorded over simulated items), the
    mean over the task's replicas; tasks whose workers no packet crossed are left
    to ``transport_s``. A worker's loop does more per packet where its replicas
    do (a sink that records every packet's trace): a worker that only computes
    paid half the source-and-sink worker's 0.3 ms a packet in the benchmark."""
    per_worker = {
        w: model.overhead_s.get(w, 0.0) / (n * scale)
        for w, n in base.cross_ends.items()
        if n
    }
    out = {}
    for t in model.tasks:
        got = [
            per_worker[w]
            for rid in t.replicas
            if (w := model.worker_of.get(rid)) in per_worker
        ]
        if got:
            out[t.name] = statistics.fmean(got)
    return out


def predict(
    model: JobModel,
    changes: Sequence[Change] = (),
    *,
    policy: str | None = None,
    workers: int | None = None,
    cores_per_worker: int = 1,
    host_cores: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The prediction for ``changes`` (see the module docstring), JSON-friendly:
    ``{throughput, p50_ms, p99_ms, operators, baseline, calibration, validity}``;
    ``host_cores`` caps the CPUs all workers share (all on one machine)."""
    transport = calibrate_transport(model, seed, host_cores)
    changed = apply(
        model,
        changes,
        policy=policy,
        workers=workers,
        cores_per_worker=cores_per_worker,
    )
    base = _run(model, seed, host_cores)
    out = _run(changed, seed, host_cores)
    measured = model.measured_throughput()
    items = model.source_items()
    # time the model leaves out (start-up, transport, event loops) carries over as
    # seconds, not as a factor: a changed plan pays it once more
    extra = model.duration_s - items / base.throughput if base.throughput else 0.0
    span = items / out.throughput if out.throughput else 0.0
    throughput = items / max(0.1 * span, span + extra) if span else 0.0
    lat = _measured_latency(model)
    scale = latency_scale(lat, base) if lat else 1.0
    tails = latency_scales(lat, base) if lat else {}
    return {
        "changes": [str(c) for c in changes],
        "policy": changed.policy,
        "workers": sorted(set(changed.worker_of.values())),
        "throughput": throughput,
        "p50_ms": out.p50_ms * scale,
        "p99_ms": out.p99_ms * scale,
        "operators": {
            name: {k: v for k, v in op.items() if k != "batch_sizes"}
            for name, op in out.operators.items()
        },
        "model": {"throughput": out.throughput, "p99_ms": out.p99_ms},
        "baseline": {
            "measured_throughput": measured,
            "model_throughput": base.throughput,
            "measured_p99_ms": lat["p99_ms"] if lat else None,
            "model_p99_ms": base.p99_ms,
        },
        "calibration": {
            "transport_ms_per_packet": 1e3 * transport,
            "unmodelled_s": extra,
            "p99": scale,
            # the p99's own ratio where enough traces measure it (not applied)
            "p99_tail": tails.get(0.99, scale),
        },
        "validity": validity(changed, out),
    }


def _measured_latency(model: JobModel) -> dict[str, Any] | None:
    """p50/p99, the ``QUANTILES`` and the number of the sampled traces that reached
    a sink (None: fewer than 20)."""
    e2e = sorted(t["end_to_end_s"] for t in model.traces if t.get("outcome") == "sink")
    if len(e2e) < 20:
        return None
    qs = {q: 1e3 * percentile(e2e, q) for q in QUANTILES}
    return {
        "p50_ms": qs[0.5],
        "p99_ms": qs[0.99],
        "quantiles_ms": qs,
        "traces": len(e2e),
    }


def latency_scales(measured: Mapping[str, Any], base: SimResult) -> dict[float, float]:
    """Per quantile of ``QUANTILES``, the measured over the modelled baseline's
    latency at that quantile where at least ``TAIL_TRACES`` traces lie beyond it,
    the median ratio (``latency_scale``) elsewhere: the calibration of a quantile
    on its own, for pauses the model does not know of (the OS, the collector,
    other processes) that stretch the run's tail more than its median. A short
    run's p99 rests on one or two traces and would scale every prediction by its
    luck, hence the fallback."""
    bulk = latency_scale(measured, base)
    n = int(measured.get("traces", 0))
    out = {}
    for q in QUANTILES:
        own = base.quantiles_ms.get(q)
        solid = own and n * (1.0 - q) >= TAIL_TRACES
        out[q] = measured["quantiles_ms"][q] / own if solid else bulk
    return out


def latency_scale(measured: Mapping[str, Any], base: SimResult) -> float:
    """Measured over modelled baseline latency: the median of the ratios at the
    ``QUANTILES`` (1.0 when the model has no latency)."""
    ratios = [
        measured["quantiles_ms"][q] / base.quantiles_ms[q]
        for q in QUANTILES
        if base.quantiles_ms.get(q)
    ]
    return statistics.median(ratios) if ratios else 1.0
