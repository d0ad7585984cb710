"""Per-replica and per-operator counters, kept by the worker loop.

The counters are plain attributes updated by the one thread (or task) driving a
replica; readers take ``snapshot()`` copies at any time (values may be one batch old).

Times are seconds:
* ``service_s``: inside operator calls;
* ``queue_wait_s``: summed over items, from a packet's push to its pop;
* ``blocked_s``: waiting for room in a full downstream queue (backpressure);
* ``idle_s``: waiting on an empty input queue;
* ``source_s``: (sources) pulling items from the source function;
* ``loop_step_cpu_s``: CPU of the steps a Dask replica ran on its worker's event
  loop (the rest of that loop's CPU, ``loop_cpu_s`` in a Dask replica's snapshot,
  is the worker's own: transport, actor calls, Dask).

``batch_service`` keeps a uniform sample (reservoir) of ``(batch size, seconds)``
pairs of the replica's chain calls: the service-time distribution per batch size
that the diagnosis models are fed with.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from random import Random
from typing import Any

#: (batch size, service seconds) pairs kept per replica
BATCH_SAMPLES = 512
#: routing keys counted per replica (the most frequent survive trimming)
TOP_KEYS = 32


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
        "_rng",
        "batch_service",
        "batches",
        "blocked_s",
        "idle_s",
        "items_in",
        "items_out",
        "keys",
        "loop_step_cpu_s",
        "operators",
        "packets_in",
        "packets_out",
        "queue",
        "queue_wait_s",
        "replica",
        "service_s",
        "source_s",
        "state",
        "step_items",
        "step_started",
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
        self.source_s = 0.0
        self.loop_step_cpu_s = 0.0
        #: the step in progress: when it began (perf_counter; 0: none) and its items
        self.step_started = 0.0
        self.step_items = 0
        self.queue: Any = None
        self.state = "created"
        self.batch_service: list[tuple[int, float]] = []
        self._rng = Random(replica)
        self.keys: Counter[str] = Counter()

    def note_batch(self, size: int, seconds: float) -> None:
        """Offer one chain call (``size`` items, ``seconds`` long) to the sample;
        call after ``batches`` was incremented."""
        sample = self.batch_service
        if len(sample) < BATCH_SAMPLES:
            sample.append((size, seconds))
            return
        slot = self._rng.randrange(max(self.batches, BATCH_SAMPLES))
        if slot < BATCH_SAMPLES:
            sample[slot] = (size, seconds)

    def note_keys(self, keys: list[Any]) -> None:
        """Count the routing keys of one output batch in every eighth batch (the
        hot keys a skewed keyed operator is told about)."""
        if self.batches % 8:
            return
        counts = self.keys
        counts.update(map(repr, keys))
        if len(counts) > 8 * TOP_KEYS:
            self.keys = Counter(dict(counts.most_common(TOP_KEYS)))

    def snapshot(self) -> dict[str, Any]:
        """A JSON-friendly copy of the counters, with the input queue's depth and the
        step in progress (``in_step_s`` so far and ``in_step_items``: not yet in
        ``service_s``/``items_in``, which count finished steps)."""
        started = self.step_started
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
            "source_s": self.source_s,
            "loop_step_cpu_s": self.loop_step_cpu_s,
            "in_step_s": max(0.0, time.perf_counter() - started) if started else 0.0,
            "in_step_items": self.step_items if started else 0,
            "batch_service": [list(p) for p in self.batch_service],
            # copied in one C call first: other threads read snapshots while the
            # replica's thread adds keys (iterating a changing dict would raise)
            "keys": dict(self.keys.copy().most_common(TOP_KEYS)),
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
