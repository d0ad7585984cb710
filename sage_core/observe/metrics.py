"""Per-replica and per-operator counters, kept by the worker loop.

The counters are plain attributes updated by the one thread (or task) driving a
replica; readers take ``snapshot()`` copies at any time (values may be one batch old).

Times are seconds:
* ``service_s``: inside operator calls;
* ``queue_wait_s``: summed over items, from a packet's push to its pop;
* ``blocked_s``: waiting for room in a full downstream queue (backpressure);
* ``idle_s``: waiting on an empty input queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class OperatorStats:
    """Counters of one operator inside one replica (chains hold several)."""

    __slots__ = ("dead_letters", "errors", "items_in", "items_out", "name", "service_s")

    def __init__(self, name: str) -> None:
        self.name = name
        self.items_in = 0
        self.items_out = 0
        self.service_s = 0.0
        self.errors = 0
        self.dead_letters = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "items_in": self.items_in,
            "items_out": self.items_out,
            "service_s": self.service_s,
            "errors": self.errors,
            "dead_letters": self.dead_letters,
        }


class ReplicaMetrics:
    """Counters of one replica; ``queue`` is its input queue (None for sources)."""

    __slots__ = (
        "batches",
        "blocked_s",
        "idle_s",
        "items_in",
        "items_out",
        "operators",
        "packets_in",
        "packets_out",
        "queue",
        "queue_wait_s",
        "replica",
        "service_s",
        "state",
        "task",
    )

    def __init__(self, replica: str, task: str, operators: Iterable[str]) -> None:
        self.replica = replica
        self.task = task
        self.operators = {name: OperatorStats(name) for name in operators}
        self.items_in = 0
        self.items_out = 0
        self.packets_in = 0
        self.packets_out = 0
        self.batches = 0
        self.service_s = 0.0
        self.queue_wait_s = 0.0
        self.blocked_s = 0.0
        self.idle_s = 0.0
        self.queue: Any = None
        self.state = "created"

    def snapshot(self) -> dict[str, Any]:
        """A JSON-friendly copy of the counters, with the input queue's depth."""
        out: dict[str, Any] = {
            "replica": self.replica,
            "task": self.task,
            "state": self.state,
            "items_in": self.items_in,
            "items_out": self.items_out,
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "batches": self.batches,
            "service_s": self.service_s,
            "queue_wait_s": self.queue_wait_s,
            "blocked_s": self.blocked_s,
            "idle_s": self.idle_s,
            "operators": {n: s.snapshot() for n, s in self.operators.items()},
        }
        if self.queue is not None:
            stats = self.queue.stats()
            out["queue"] = {
                "depth": stats.size,
                "capacity": stats.capacity,
                "high_watermark": stats.high_watermark,
                "pushed": stats.pushed,
                "popped": stats.popped,
                "producer_blocks": stats.producer_blocks,
            }
        return out


def aggregate(replicas: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-operator totals over replica snapshots (``replicas`` counts them)."""
    out: dict[str, dict[str, Any]] = {}
    for snap in replicas:
        for name, stats in snap["operators"].items():
            agg = out.setdefault(
                name,
                {
                    "replicas": 0,
                    "items_in": 0,
                    "items_out": 0,
                    "service_s": 0.0,
                    "errors": 0,
                    "dead_letters": 0,
                    "queue_wait_s": 0.0,
                    "blocked_s": 0.0,
                    "queue_high_watermark": 0,
                },
            )
            agg["replicas"] += 1
            for key in ("items_in", "items_out", "service_s", "errors", "dead_letters"):
                agg[key] += stats[key]
            if name == next(iter(snap["operators"])):  # the chain head owns the queue
                agg["queue_wait_s"] += snap["queue_wait_s"]
                queue = snap.get("queue")
                if queue:
                    agg["queue_high_watermark"] = max(
                        agg["queue_high_watermark"], queue["high_watermark"]
                    )
            if name == list(snap["operators"])[-1]:  # the tail pushes downstream
                agg["blocked_s"] += snap["blocked_s"]
    return out
