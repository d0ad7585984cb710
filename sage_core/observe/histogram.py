"""Fixed-bucket latency histograms: cheap to record, mergeable, Prometheus-shaped.

Buckets are log-spaced upper bounds from 1 us to 60 s (1-2.5-5 steps), the same for
every histogram so that replicas can be merged and exported as one Prometheus
histogram. Quantiles are interpolated inside the bucket that holds them.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Any

BOUNDS: tuple[float, ...] = (
    *(m * 10.0**e for e in range(-6, 2) for m in (1.0, 2.5, 5.0)),
    60.0,
)


class LatencyHistogram:
    """Counts of values (seconds) per bucket; ``record(value, weight)``."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def record(self, value: float, weight: int = 1) -> None:
        if weight <= 0:
            return
        self.counts[bisect.bisect_left(BOUNDS, value)] += weight
        self.count += weight
        self.sum += value * weight

    def snapshot(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "count": self.count, "sum": self.sum}


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One snapshot summing several."""
    counts = [0] * (len(BOUNDS) + 1)
    total, s = 0, 0.0
    for snap in snapshots:
        for i, c in enumerate(snap["counts"]):
            counts[i] += c
        total += snap["count"]
        s += snap["sum"]
    return {"counts": counts, "count": total, "sum": s}


def quantile(snapshot: Mapping[str, Any], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a snapshot, None when it is empty."""
    total = snapshot["count"]
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, c in enumerate(snapshot["counts"]):
        if c and seen + c >= rank:
            lo = BOUNDS[i - 1] if i > 0 else 0.0
            hi = BOUNDS[i] if i < len(BOUNDS) else BOUNDS[-1]
            return lo + (hi - lo) * max(0.0, rank - seen) / c
        seen += c
    return BOUNDS[-1]


def cumulative(snapshot: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Prometheus buckets: (upper bound as text, cumulative count), +Inf last."""
    out, running = [], 0
    for i, c in enumerate(snapshot["counts"]):
        running += c
        out.append((repr(BOUNDS[i]) if i < len(BOUNDS) else "+Inf", running))
    return out
