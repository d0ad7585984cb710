"""Where the latency tail comes from: the slowest traced packets set against the
typical ones, part by part.

Each traced packet's time splits into its hops' transit, queue wait, service and
blocked seconds and its source's wait for room (``observe.traces``). The slowest
``TAIL_SHARE`` of the packets that reached a sink (at least one) and the middle fifth
(the 40th to 60th percentile: typical packets) are averaged per replica and part,
a hop a packet did not pass counting as zero; the parts whose mean grows most from
typical to slowest are where the tail is made. A p99 that moves with queue wait at
one replica asks for that replica's capacity or its neighbours on the worker; one
that moves with transit, for the worker that receives.
"""

from __future__ import annotations

from typing import Any

from sage_core.diagnosis.model import JobModel

#: the share of sink-reaching traces counted as the tail
TAIL_SHARE = 0.02
#: fewest sink-reaching traces to speak of a tail at all
MIN_TRACES = 20
#: the parts of a hop, as traces name them
PARTS = ("transit_s", "queue_wait_s", "service_s", "blocked_s")
#: parts listed in the result, largest excess first
TOP = 5


def _means(traces: list[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
    """Mean milliseconds per (replica, operator, part) over ``traces``."""
    out: dict[tuple[str, str, str], float] = {}
    for t in traces:
        waited = t.get("source_blocked_s", 0.0)
        if waited:
            key = (t.get("origin", "source"), "source", "blocked")
            out[key] = out.get(key, 0.0) + waited
        for h in t["hops"]:
            for part in PARTS:
                if part in h:
                    key = (h["replica"], h["task"], part[:-2])
                    out[key] = out.get(key, 0.0) + h[part]
    return {k: 1e3 * v / len(traces) for k, v in out.items()}


def tail_of(model: JobModel) -> dict[str, Any] | None:
    """``{traces, slowest, end_to_end_ms: {slowest, typical}, parts: [...]}`` with
    ``parts`` the ``TOP`` (replica, operator, part) whose mean grows most from the
    typical packets to the slowest, each ``{replica, operator, part, slowest_ms,
    typical_ms, extra_ms}``; None with fewer than ``MIN_TRACES`` traces."""
    done = sorted(
        (t for t in model.traces if t.get("outcome") == "sink"),
        key=lambda t: t["end_to_end_s"],
    )
    n = len(done)
    if n < MIN_TRACES:
        return None
    slowest = done[-max(1, int(TAIL_SHARE * n)) :]
    typical = done[int(0.4 * n) : int(0.6 * n)]
    slow, mid = _means(slowest), _means(typical)
    extra = {k: slow.get(k, 0.0) - mid.get(k, 0.0) for k in set(slow) | set(mid)}
    parts = [
        {
            "replica": rid,
            "operator": op,
            "part": part,
            "slowest_ms": slow.get((rid, op, part), 0.0),
            "typical_ms": mid.get((rid, op, part), 0.0),
            "extra_ms": extra[rid, op, part],
        }
        for rid, op, part in sorted(extra, key=lambda k: -extra[k])[:TOP]
    ]

    def e2e(ts: list[dict[str, Any]]) -> float:
        return 1e3 * sum(t["end_to_end_s"] for t in ts) / len(ts)

    return {
        "traces": n,
        "slowest": len(slowest),
        "end_to_end_ms": {"slowest": e2e(slowest), "typical": e2e(typical)},
        "parts": parts,
    }
