"""What a simulated run gives (``sim.SimResult``), the latency quantiles it
reports, and several simulated runs of one plan taken together (``merged``)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
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
    #: per worker: the packets that crossed workers at it (sent or received)
    cross_ends: dict[str, int] = field(default_factory=dict)
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


def merged(results: Sequence[SimResult]) -> SimResult:
    """Several simulated runs of one plan (other seeds) as one: the mean makespan
    (throughput = items per run over it) and the mean of every latency quantile,
    operator figure and crossing count; batch sizes seen in any run; the most items
    an engine held at once in any run."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    ops: dict[str, dict[str, Any]] = {}
    for name, figures in first.operators.items():
        ops[name] = {
            key: _merged_figure(key, [r.operators[name][key] for r in results])
            for key in figures
        }
    span = statistics.fmean(r.makespan_s for r in results)
    qs = {
        q: statistics.fmean(r.quantiles_ms.get(q, 0.0) for r in results)
        for q in first.quantiles_ms
    }
    return SimResult(
        throughput=first.throughput * first.makespan_s / span if span else 0.0,
        p50_ms=qs.get(0.5, statistics.fmean(r.p50_ms for r in results)),
        p99_ms=qs.get(0.99, statistics.fmean(r.p99_ms for r in results)),
        makespan_s=span,
        items=round(statistics.fmean(r.items for r in results)),
        operators=ops,
        cross_packets=_mean_counts([r.cross_packets for r in results]),
        cross_ends=_mean_counts([r.cross_ends for r in results]),
        quantiles_ms=qs,
    )


def _mean_counts(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    """Per key, the mean count over ``counts`` (0 where one lacks the key)."""
    keys = {k for c in counts for k in c}
    return {k: round(statistics.fmean(c.get(k, 0) for c in counts)) for k in keys}


def _merged_figure(key: str, values: list[Any]) -> Any:
    if key == "batch_sizes":
        return sorted({k for v in values for k in v})
    if key == "engine_items":
        return max(values)
    if key == "items":
        return [round(statistics.fmean(x)) for x in zip(*values, strict=True)]
    if all(v == values[0] for v in values) or isinstance(values[0], bool):
        return values[0]
    if isinstance(values[0], int | float):
        return statistics.fmean(values)
    return values[0]
