"""The LLM control plane's dispatch decisions replayed under another request policy.

Input: a gateway's decision log (``sage gateway --record-decisions LOG``;
``sage_core.llm.decisions``). The replay rebuilds the same demand and the same
engines: every request that was served arrives at its recorded time, with its class,
model, priority, SLO and token estimate, and holds an engine slot for as long as it
held one in the recording (dispatch to done). A request policy (a plugin, by name)
and the recorded router then dispatch them in simulated time over engines with the
recorded slots and devices, decision by decision.

The recorded policy (the one the gateway started with; a switch at run time is
listed in ``policy_switches``) is replayed as well. Its replay set beside the recording is the
check of the replay itself (same policy, so the waits should match); the effect of
another policy is read against that replay, like for like.

Held fixed, and so not predicted: each request's time on an engine (a replayed
embedding batch takes the longest of its requests' recorded times, so batching
differently and co-location changing engine speed are not modelled); requests that
never reached an engine (rejected, cancelled while queued) are left out, as are
retried attempts (a request counts with its last dispatch). Routers see what the log
kept: in-flight requests and tokens per engine and co-located work, not the engines'
``/metrics`` gauges nor prompt prefixes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_core.diagnosis.dispatch_log import DispatchLog, Logged, read_log
from sage_core.diagnosis.model import DiagnosisError

#: most simulated events before the replay gives up (a policy that never settles)
MAX_EVENTS = 5_000_000


@dataclass(slots=True)
class _Engine:
    id: str
    kind: str
    models: tuple[str, ...]
    slots: int
    device: str | None
    inflight: int = 0
    tokens: int = 0


def _engines(log: DispatchLog) -> list[_Engine]:
    """The recorded engines; an engine added while the gateway ran (not in the start
    record) gets one slot."""
    out = {
        e["id"]: _Engine(
            e["id"], e["kind"], tuple(e["models"]), int(e["max_inflight"]), e["device"]
        )
        for e in log.start.get("engines", [])
    }
    for r in log.requests.values():
        if r.engine not in out:
            kind = "embedding" if r.kind == "embedding" else "llm"
            out[r.engine] = _Engine(r.engine, kind, (r.model,), 1, None)
        elif r.model not in out[r.engine].models:
            e = out[r.engine]
            e.models = (*e.models, r.model)
    return list(out.values())


class _View:
    """The DispatchView a replayed policy reads (``sage_core.llm.scheduling``)."""

    def __init__(self, engines: list[_Engine]) -> None:
        self.engines_ = engines
        self.now = 0.0

    def serving(self, pool: str) -> list[_Engine]:
        kind, _, model = pool.partition(":")
        return [e for e in self.engines_ if e.kind == kind and model in e.models]

    def ready(self, pool: str) -> bool:
        return any(e.inflight < e.slots for e in self.serving(pool))

    def inflight(self, pool: str) -> int:
        return sum(e.inflight for e in self.serving(pool))

    def inflight_kind(self, engine_kind: str) -> int:
        return sum(e.inflight for e in self.engines_ if e.kind == engine_kind)

    def engines(self, pool: str) -> int:
        return len(self.serving(pool))

    def beside(self, engine: _Engine) -> list[_Engine]:
        """The engines of the other kind on ``engine``'s device."""
        if engine.device is None:
            return []
        return [
            e
            for e in self.engines_
            if e.device == engine.device and e.kind != engine.kind
        ]

    def colocated(self, engine: _Engine) -> int:
        return sum(e.inflight for e in self.beside(engine))

    def ready_apart(self, pool: str) -> bool:
        return any(
            e.inflight < e.slots and not self.colocated(e) for e in self.serving(pool)
        )


@dataclass(slots=True)
class Replayed:
    """One replay: per request its dispatch time, and the decisions."""

    dispatched: dict[str, float] = field(default_factory=dict)
    decisions: list[tuple[float, str, list[str]]] = field(default_factory=list)


def simulate(
    log: DispatchLog, policy: str, policy_config: Mapping[str, Any] | None = None
) -> Replayed:
    """Dispatch the log's requests under ``policy`` (a request-policy plugin) and the
    recorded routers, in simulated time.

    Raises:
        DiagnosisError: unknown policy or router, or a replay that does not settle.
    """
    from sage_core.common.errors import SageError
    from sage_core.llm.classify import LLMRequest
    from sage_core.llm.plane import make_policy, make_router
    from sage_core.routing import Candidate, RouteRequest, colocation_signals

    try:
        chosen = make_policy(policy, dict(policy_config or {}))
        config = dict(log.start.get("router_config") or {})
        routers = {
            kind: make_router(name, config)
            for kind, name in (log.start.get("routers") or {}).items()
        }
    except SageError as exc:
        raise DiagnosisError(f"cannot replay under {policy!r}: {exc}") from None
    engines = _engines(log)
    view, out = _View(engines), Replayed()
    served = sorted(log.requests.values(), key=lambda r: (r.arrival, r.id))
    requests = {
        r.id: LLMRequest(
            kind=r.kind,
            model=r.model,
            body={},
            priority=r.priority,
            slo_ms=r.slo_ms,
            arrival=r.arrival,
            deadline=math.inf if r.slo_ms is None else r.arrival + r.slo_ms / 1000,
            tokens=r.tokens,
            size=r.size,
            id=r.id,
            seq=n,
        )
        for n, r in enumerate(served, 1)
    }
    events: list[tuple[float, int, str, Any]] = []
    order = 0
    for r in served:
        events.append((r.arrival, order, "arrive", r.id))
        order += 1
    heapq.heapify(events)
    timer = math.inf
    steps = 0
    while events:
        now = events[0][0]
        while events and events[0][0] <= now:
            _, _, what, payload = heapq.heappop(events)
            steps += 1
            if what == "arrive":
                chosen.push(requests[payload])
            elif what == "free":
                engine, tokens = payload
                engine.inflight -= 1
                engine.tokens -= tokens
        if steps > MAX_EVENTS:
            raise DiagnosisError(f"the replay under {policy!r} did not settle")
        if timer <= now:
            timer = math.inf
        view.now = now
        parked = []
        while batch := chosen.pop(view):
            free = [e for e in view.serving(batch[0].pool) if e.inflight < e.slots]
            if not free:
                parked.append(batch)
                continue
            router = routers.get(free[0].kind)
            candidates = [
                Candidate(
                    i,
                    e.id,
                    load=e.inflight,
                    capacity=e.slots - e.inflight,
                    tokens=e.tokens,
                    signals=colocation_signals(view.beside(e)),
                )
                for i, e in enumerate(free)
            ]
            pick = (
                router.route(
                    RouteRequest(tokens=batch[0].tokens, kind=free[0].kind), candidates
                )
                if router is not None
                else [0]
            )
            engine = free[pick[0]]
            tokens = sum(r.tokens for r in batch)
            engine.inflight += 1
            engine.tokens += tokens
            ids = [r.id for r in batch]
            out.decisions.append((now, engine.id, ids))
            for rid in ids:
                out.dispatched[rid] = now
            hold = max(log.requests[rid].service_s for rid in ids)
            heapq.heappush(events, (now + hold, order, "free", (engine, tokens)))
            order += 1
        for batch in parked:
            for request in batch:
                chosen.push(request)
        wait = chosen.wake_after(now)
        if wait is not None and now + max(wait, 1e-4) < timer:
            timer = now + max(wait, 1e-4)
            heapq.heappush(events, (timer, order, "timer", None))
            order += 1
    left = set(log.requests) - set(out.dispatched)
    if left:
        raise DiagnosisError(
            f"the replay under {policy!r} never dispatched {len(left)} request(s) "
            f"(e.g. {min(left)}): does it hold work back without a wake-up?"
        )
    return out


def class_stats(
    log: DispatchLog, dispatched: Mapping[str, float], *, by_priority: bool = False
) -> dict[str, Any]:
    """Per request class (``chat``; with ``by_priority`` per class and priority,
    ``chat p9``): requests, p50/p99 queue wait (ms) and SLO attainment (the share of
    requests with an SLO whose wait plus engine time met it; None without any) when
    each request was dispatched at ``dispatched[id]``."""
    from sage_core.diagnosis.sim import percentile

    by_kind: dict[str, list[Logged]] = {}
    for r in log.requests.values():
        key = f"{r.kind} p{r.priority}" if by_priority else r.kind
        by_kind.setdefault(key, []).append(r)
    out = {}
    for kind, rs in sorted(by_kind.items()):
        waits = [max(0.0, dispatched[r.id] - r.arrival) * 1000 for r in rs]
        slo = [
            (w + r.service_s * 1000) <= r.slo_ms
            for w, r in zip(waits, rs, strict=True)
            if r.slo_ms is not None
        ]
        out[kind] = {
            "requests": len(rs),
            "wait_p50_ms": percentile(waits, 0.5),
            "wait_p99_ms": percentile(waits, 0.99),
            "slo_attainment": sum(slo) / len(slo) if slo else None,
        }
    return out


def replay_dispatch(
    path: str | Path,
    policy: str | None = None,
    policy_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The recorded decisions beside ``policy``'s (None: the recorded policy), and
    the effect per class: ``{recorded_policy, policy, requests, left_out, classes:
    {kind: {recorded, replayed_recorded_policy, replayed}}, priorities: (the same
    per class and priority), policy_switches, decisions: [{k, recorded, replayed,
    changed}]}``. ``replayed_recorded_policy`` checks the replay against the
    recording; compare ``replayed`` with it (both simulated).

    Raises:
        DiagnosisError: a bad log, or a policy that cannot replay it.
    """
    log = read_log(path)
    recorded_policy = str(log.start.get("policy", ""))
    same = simulate(log, recorded_policy, log.start.get("policy_config"))
    if policy is None or (policy == recorded_policy and policy_config is None):
        policy, other = recorded_policy, same  # the same replay: run it once
    else:
        other = simulate(log, policy, policy_config)
    recorded = {r.id: r.dispatched for r in log.requests.values()}
    # the recorded decisions that served requests: each request's last dispatch
    # (an attempt that failed and was retried elsewhere is left out)
    mine = [
        d
        for d in log.decisions
        if all(
            i in log.requests
            and (log.requests[i].dispatched, log.requests[i].engine) == d[:2]
            for i in d[2]
        )
    ]
    classes, priorities = (
        _side_by_side(
            class_stats(log, recorded, by_priority=by),
            class_stats(log, same.dispatched, by_priority=by),
            class_stats(log, other.dispatched, by_priority=by),
        )
        for by in (False, True)
    )
    decisions = []
    for k in range(max(len(mine), len(other.decisions))):
        a = mine[k] if k < len(mine) else None
        b = other.decisions[k] if k < len(other.decisions) else None
        decisions.append(
            {
                "k": k,
                "recorded": _decision(a),
                "replayed": _decision(b),
                "changed": a is None or b is None or (a[1], a[2]) != (b[1], b[2]),
            }
        )
    return {
        "recorded_policy": recorded_policy,
        "policy": policy,
        "requests": len(log.requests),
        "left_out": log.unfinished,
        "classes": classes,
        "priorities": priorities,
        "policy_switches": log.switches,
        "decisions": decisions,
    }


def _side_by_side(
    recorded: dict[str, Any], same: dict[str, Any], other: dict[str, Any]
) -> dict[str, Any]:
    return {
        kind: {
            "recorded": rec,
            "replayed_recorded_policy": same[kind],
            "replayed": other[kind],
        }
        for kind, rec in recorded.items()
    }


def _decision(d: tuple[float, str, list[str]] | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"t": d[0], "engine": d[1], "requests": d[2]}
