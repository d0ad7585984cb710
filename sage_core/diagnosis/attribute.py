"""Attribution: where a job's time went, its bottleneck and what to change.

Per operator (task) and replica, from the recorded counters: queue wait per item,
service per batch, blocked (backpressure) per batch, utilisation (busy share of the
run) and blocked share; from the sampled traces, the transit of packets into it
(``transport_ms``: from leaving the hop before to entering its queue; None where no
trace passed, or the record predates the field), and the mean time traces spend
between hops overall (``transport_ms`` of the job). The bottleneck class is decided
in this order:

* ``skew``: a keyed operator whose busiest replica takes >= 1.5x the mean items and
  is the busiest replica of the job (names the hot keys its upstream sent);
* ``placement``: the busiest operator's replicas share a worker at least 60% busy
  with other busy replicas while another worker is at most half as busy;
* ``source``: the source is >= 70% busy pulling items and no other operator is
  half busy;
* ``overhead``: no operator is half busy and packets are small (<= 4 items) or most
  end-to-end time is between hops;
* ``backpressure``: the busiest operator is a sink and its upstreams are blocked
  >= 20% of the run (names the sink);
* ``compute``: otherwise, the busiest operator.

Recommendations are changes whose effect ``whatif.predict`` quantifies, each with
its predicted ratios to the model's own baseline (``effect``). Ranked: first those
that raise throughput by at least ``MARGIN`` (the what-if's throughput error goal),
most throughput first; then those whose throughput change is within the margin,
shortest p99 first; those that lose more than the margin last. A gain smaller than
the model's error is no reason to accept a p99 several times longer.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from sage_core.diagnosis.model import JobModel, TaskModel
from sage_core.diagnosis.tail import tail_of
from sage_core.diagnosis.whatif import Change, predict

SKEW_RATIO = 1.5
BUSY = 0.7
HALF = 0.5
CROWDED = 0.6
BLOCKED = 0.2
SMALL_PACKET = 4
#: a predicted throughput change smaller than this share is within the model's error
MARGIN = 0.05


def _replica_row(
    model: JobModel, rid: str, task: TaskModel, transit: list[float] | None
) -> dict[str, Any]:
    snap = model.replicas.get(rid, {})
    # an engine's time is not the worker's CPU: never deflated, never crowds it
    scale = (
        1.0 if task.engine else model.deflation.get(model.worker_of.get(rid, "?"), 1.0)
    )
    items = snap.get("items_in", 0) or snap.get("items_out", 0)
    batches = snap.get("batches", 0)
    busy = (snap.get("service_s", 0.0) + snap.get("source_s", 0.0)) * scale
    d = model.duration_s
    return {
        "replica": rid,
        "worker": model.worker_of.get(rid, "?"),
        "items": items,
        "queue_wait_ms": 1e3 * snap.get("queue_wait_s", 0.0) / items if items else 0.0,
        "service_ms": 1e3 * snap.get("service_s", 0.0) * scale / batches
        if batches
        else 0.0,
        "blocked_ms": 1e3 * snap.get("blocked_s", 0.0) / batches if batches else 0.0,
        "utilisation": busy / d if d else 0.0,
        "blocked": snap.get("blocked_s", 0.0) / d if d else 0.0,
        "items_per_batch": items / batches if batches else 0.0,
        "transport_ms": 1e3 * statistics.fmean(transit) if transit else None,
    }


def transits(model: JobModel) -> dict[str, list[float]]:
    """Per replica: the transit seconds of the traced packets that entered it."""
    out: dict[str, list[float]] = {}
    for t in model.traces:
        for h in t.get("hops", ()):
            if "transit_s" in h:
                out.setdefault(h["replica"], []).append(h["transit_s"])
    return out


def breakdown(model: JobModel) -> list[dict[str, Any]]:
    """One row per operator (task) with its replicas' rows; item-weighted means
    (``transport_ms``: the mean over the traced packets into it)."""
    rows = []
    transit = transits(model)
    for t in model.tasks:
        reps = [_replica_row(model, rid, t, transit.get(rid)) for rid in t.replicas]
        items = sum(r["items"] for r in reps) or 1
        row: dict[str, Any] = {
            "operator": t.name,
            "role": t.role,
            "items": sum(r["items"] for r in reps),
            "engine": t.engine,
        }
        for key in ("queue_wait_ms", "service_ms", "blocked_ms"):
            row[key] = sum(r[key] * r["items"] for r in reps) / items
        row["utilisation"] = statistics.fmean(r["utilisation"] for r in reps)
        row["blocked"] = statistics.fmean(r["blocked"] for r in reps)
        row["items_per_batch"] = statistics.fmean(r["items_per_batch"] for r in reps)
        into = [x for rid in t.replicas for x in transit.get(rid, ())]
        row["transport_ms"] = 1e3 * statistics.fmean(into) if into else None
        row["replicas"] = reps
        rows.append(row)
    return rows


def transport_ms(model: JobModel) -> float | None:
    """Mean end-to-end time of sink-reaching traces outside any hop and outside the
    source's wait for room downstream (None: no such trace)."""
    gaps = [
        t["end_to_end_s"]
        - t.get("source_blocked_s", 0.0)
        - sum(h["queue_wait_s"] + h["service_s"] + h["blocked_s"] for h in t["hops"])
        for t in model.traces
        if t.get("outcome") == "sink"
    ]
    return 1e3 * max(0.0, statistics.fmean(gaps)) if gaps else None


def critical_path(model: JobModel, rows: list[dict[str, Any]]) -> list[str]:
    """The source-to-sink chain of operators with the largest summed time per item."""
    cost = {
        r["operator"]: r["queue_wait_ms"] + r["service_ms"] + r["blocked_ms"]
        for r in rows
    }
    best: dict[str, tuple[float, list[str]]] = {}
    for t in model.tasks:  # plan order is topological
        ups = [best[u] for u in model.upstream(t.name) if u in best]
        base = max(ups, key=lambda x: x[0]) if ups else (0.0, [])
        best[t.name] = (base[0] + cost[t.name], [*base[1], t.name])
    sinks = [t.name for t in model.tasks if not model.downstream(t.name)]
    return max((best[s] for s in sinks), key=lambda x: x[0])[1] if sinks else []


def _hot_keys(model: JobModel, task: str) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter()
    for up in model.upstream(task):
        for rid in model.task(up).replicas:
            counts.update(model.replicas.get(rid, {}).get("keys", {}))
    total = sum(counts.values())
    return [
        {"key": k, "share": n / total}
        for k, n in counts.most_common(5)
        if total and n / total >= 0.05
    ]


def classify(model: JobModel, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"operator", "class", "evidence"}`` (see the module docstring)."""
    by = {r["operator"]: r for r in rows}
    inner = [r for r in rows if r["role"] != "source"] or rows
    top = max(inner, key=lambda r: max(x["utilisation"] for x in r["replicas"]))
    hottest = max(x["utilisation"] for r in rows for x in r["replicas"])
    for ch in model.channels:
        r = by[ch.dst_task]
        items = [x["items"] for x in r["replicas"]]
        if not ch.keyed or len(items) < 2 or not sum(items):
            continue
        hot = max(r["replicas"], key=lambda x: x["items"])
        ratio = hot["items"] / statistics.fmean(items)
        if ratio >= SKEW_RATIO and hot["utilisation"] >= hottest - 1e-9:
            return {
                "operator": ch.dst_task,
                "class": "skew",
                "evidence": {
                    "hot_replica": hot["replica"],
                    "items_vs_mean": round(ratio, 2),
                    "hot_keys": _hot_keys(model, ch.dst_task),
                },
            }
    load: dict[str, float] = {}
    for r in rows:
        for x in r["replicas"] if not r["engine"] else ():
            load[x["worker"]] = load.get(x["worker"], 0.0) + x["utilisation"]
    if len(load) > 1:
        for x in top["replicas"]:
            w = x["worker"]
            crowd = [
                y["replica"]
                for r in rows
                if not r["engine"]
                for y in r["replicas"]
                if y["worker"] == w and y["utilisation"] >= 0.1
            ]
            idle = min(load, key=lambda k: load[k])
            slots = model.slots.get(w, 1)
            if (
                len(crowd) > 1
                and load[w] >= CROWDED * slots
                and load[idle] <= HALF * load[w]
            ):
                return {
                    "operator": top["operator"],
                    "class": "placement",
                    "evidence": {
                        "worker": w,
                        "worker_load": round(load[w], 2),
                        "replicas_there": crowd,
                        "idle_worker": idle,
                        "idle_load": round(load[idle], 2),
                    },
                }
    src = [r for r in rows if r["role"] == "source"]
    top_u = top["utilisation"]
    if src and top_u < HALF:
        s = max(src, key=lambda r: r["utilisation"])
        if s["utilisation"] >= BUSY:
            return {
                "operator": s["operator"],
                "class": "source",
                "evidence": {
                    "source_busy": round(s["utilisation"], 2),
                    "busiest_other": top["operator"],
                    "its_utilisation": round(top_u, 2),
                },
            }
        per_packet = statistics.fmean(r["items_per_batch"] for r in src)
        between = transport_ms(model)
        hop = sum(r["queue_wait_ms"] + r["service_ms"] for r in rows)
        if per_packet <= SMALL_PACKET or (between and between > hop):
            return {
                "operator": top["operator"],
                "class": "overhead",
                "evidence": {
                    "items_per_packet": round(per_packet, 2),
                    "busiest_utilisation": round(top_u, 2),
                    "between_hops_ms": between,
                },
            }
    blocked_ups = {u: by[u]["blocked"] for u in model.upstream(top["operator"])}
    if top["role"] == "sink" and blocked_ups and max(blocked_ups.values()) >= BLOCKED:
        return {
            "operator": top["operator"],
            "class": "backpressure",
            "evidence": {
                "sink_utilisation": round(top_u, 2),
                "blocked_upstream": {u: round(b, 2) for u, b in blocked_ups.items()},
            },
        }
    return {
        "operator": top["operator"],
        "class": "compute",
        "evidence": {
            "utilisation": round(top_u, 2),
            "service_ms_per_batch": round(top["service_ms"], 3),
            "blocked_upstream": {u: round(b, 2) for u, b in blocked_ups.items()},
        },
    }


def _candidates(model: JobModel, verdict: dict[str, Any]) -> list[dict[str, Any]]:
    """Actions worth predicting for a verdict: ``{action, changes, policy, salt}``."""
    op = verdict["operator"]
    n = len(model.task(op).replicas)
    cls = verdict["class"]
    par = {
        "action": f"raise {op} parallelism to {2 * n}",
        "changes": [Change(op, "parallelism", 2 * n)],
    }
    bigger = max(64, 4 * model.buffer_size)
    out: list[dict[str, Any]] = [par]
    if cls in ("compute", "overhead"):
        out.append(
            {
                "action": f"bigger packets: buffer_size={bigger}",
                "changes": [Change(None, "buffer_size", bigger)],
            }
        )
    if cls == "backpressure":
        cap = 4 * max((t.queue_capacity for t in model.tasks), default=1)
        out.append(
            {
                "action": f"deeper queues: queue_capacity={cap}",
                "changes": [Change(None, "queue_capacity", cap)],
            }
        )
    if cls == "skew":
        out.append({"action": f"salt the hot keys of {op}", "changes": [], "salt": op})
    if cls == "placement" or len(model.slots) > 1:
        for policy in ("load-aware-spread", "round-robin"):
            if policy != model.policy:
                out.append(
                    {"action": f"place with {policy}", "changes": [], "policy": policy}
                )
    return out


def recommend(
    model: JobModel,
    verdict: dict[str, Any],
    host_cores: int | None = None,
    base: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Candidate actions with their predicted effect, ranked as the module docstring
    says; ``base``: the unchanged plan's prediction, when already made."""
    base = base or predict(model, host_cores=host_cores)
    out = []
    for cand in _candidates(model, verdict):
        m = model
        if cand.get("salt"):
            m = _salted(model, cand["salt"])
        got = predict(
            m, cand["changes"], policy=cand.get("policy"), host_cores=host_cores
        )
        out.append(
            {
                "action": cand["action"],
                "changes": got["changes"],
                "policy": cand.get("policy"),
                "predicted": {"throughput": got["throughput"], "p99_ms": got["p99_ms"]},
                "effect": (effect := _effect(got, base)),
                "gain": gain(effect),
                "validity": got["validity"],
            }
        )
    return ranked(out)


def ranked(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recommendations (with ``effect``) in the order the module docstring says."""
    return sorted(recs, key=_rank)


def _effect(got: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """Predicted throughput and p99 as ratios to the predicted baseline."""

    def ratio(key: str) -> float | None:
        b = base.get(key)
        return round(got[key] / b, 4) if b and got.get(key) is not None else None

    return {"throughput_ratio": ratio("throughput"), "p99_ratio": ratio("p99_ms")}


def _rank(rec: dict[str, Any]) -> tuple[int, float]:
    tp = rec["effect"]["throughput_ratio"] or 1.0
    p99 = rec["effect"]["p99_ratio"]
    if tp >= 1.0 + MARGIN:
        return 0, -tp
    if tp > 1.0 - MARGIN:
        return 1, p99 if p99 is not None else 1.0
    return 2, -tp


def gain(effect: dict[str, float | None]) -> str:
    """What a recommendation is predicted to buy: ``throughput`` (at least
    ``MARGIN`` more), ``latency`` (throughput within the margin, p99 shorter by at
    least the margin), ``none`` or ``loss`` (throughput down by more than it)."""
    tp, p99 = effect["throughput_ratio"] or 1.0, effect["p99_ratio"]
    if tp >= 1.0 + MARGIN:
        return "throughput"
    if tp <= 1.0 - MARGIN:
        return "loss"
    return "latency" if p99 is not None and p99 <= 1.0 - MARGIN else "none"


def _salted(model: JobModel, task: str) -> JobModel:
    import copy

    m = copy.copy(model)
    m.channels = [copy.copy(c) for c in model.channels]
    for ch in m.channels:
        if ch.dst_task == task and ch.shares:
            ch.shares = {d: 1.0 / len(ch.shares) for d in ch.shares}
    return m


def diagnose(model: JobModel, *, host_cores: int | None = None) -> dict[str, Any]:
    """The attribution of a job: ``{job, bottleneck, breakdown, critical_path,
    transport_ms, tail, baseline, recommendations}`` (``tail``: ``tail.tail_of``);
    ``host_cores`` as in ``predict``."""
    rows = breakdown(model)
    verdict = classify(model, rows)
    base = predict(model, host_cores=host_cores)
    return {
        "job": model.job,
        "bottleneck": verdict,
        "breakdown": rows,
        "critical_path": critical_path(model, rows),
        "transport_ms": transport_ms(model),
        "tail": tail_of(model),
        "measured": {
            "throughput": model.measured_throughput(),
            "duration_s": model.duration_s,
        },
        "model_baseline": base["baseline"],
        "recommendations": recommend(model, verdict, host_cores, base),
    }
