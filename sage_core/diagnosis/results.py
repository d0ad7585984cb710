"""What a simulated run gives (``sim.SimResult``) and the latency quantiles it
reports."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SimResult:
    """What one simulated run gives.

    Attributes:
        throughput: source items per second of makespan.
        p50_ms, p99_ms: emission-to-sink latency of the items.
        makespan_s: from the first pull to the last sink item.
        operators: task name -> utilisation (busy / (replicas * makespan)),
            blocked fraction, mean queue wait per item (ms), service per batch (ms),
            batch sizes seen and items per replica.
    """

    throughput: float
    p50_ms: float
    p99_ms: float
    makespan_s: float
    items: int
    operators: dict[str, dict[str, Any]]
    cross_packets: dict[str, int] = field(default_factory=dict)
    #: latency (ms) at each of ``QUANTILES``
    quantiles_ms: dict[float, float] = field(default_factory=dict)


#: the latency quantiles a result reports (what-if calibrates its latency on them)
QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted ``values`` (0.0 when empty)."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[
        min(998, max(0, round(q * 1000) - 1))
    ]
