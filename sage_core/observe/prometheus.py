"""SAGE series on the scheduler's ``/metrics``: a prometheus_client collector over the
job boards of this process.

Series (labels ``job``, ``task``, ``replica``, ``worker``):
``sage_replica_queue_depth`` (packets in the input queue), ``sage_replica_queue_capacity``,
``sage_items_total`` (items into the replica; ``direction`` in/out),
``sage_replica_service_seconds_total``, ``sage_replica_blocked_seconds_total``,
``sage_item_latency_seconds`` (histogram of per-item queue wait + service),
``sage_item_service_seconds`` (histogram of per-item service), and
``sage_jobs`` (jobs by ``status``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sage_core.observe.histogram import BOUNDS, cumulative

if TYPE_CHECKING:
    from sage_core.observe.jobboard import JobBoard

_lock = threading.Lock()
_boards: list[JobBoard] = []
_registered = False


class SageCollector:
    """Yields the SAGE metric families from every registered board."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        labels = ["job", "task", "replica", "worker"]
        depth = GaugeMetricFamily(
            "sage_replica_queue_depth",
            "Packets waiting in the replica's input queue",
            labels=labels,
        )
        capacity = GaugeMetricFamily(
            "sage_replica_queue_capacity",
            "Slots of the replica's input queue",
            labels=labels,
        )
        items = CounterMetricFamily(
            "sage_items", "Items through a replica", labels=[*labels, "direction"]
        )
        service = CounterMetricFamily(
            "sage_replica_service_seconds",
            "Seconds inside operator calls",
            labels=labels,
        )
        blocked = CounterMetricFamily(
            "sage_replica_blocked_seconds",
            "Seconds waiting for room downstream (backpressure)",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "sage_item_latency_seconds",
            "Per-item queue wait plus service time at a replica",
            labels=labels,
        )
        service_h = HistogramMetricFamily(
            "sage_item_service_seconds",
            "Per-item service time at a replica",
            labels=labels,
        )
        jobs = GaugeMetricFamily("sage_jobs", "SAGE jobs by status", labels=["status"])
        checkpoints = _checkpoint_families(CounterMetricFamily, GaugeMetricFamily)
        by_status: dict[str, int] = {}
        with _lock:
            boards = list(_boards)
        for board in boards:
            for job in list(board.jobs.values()):
                by_status[job["status"]] = by_status.get(job["status"], 0) + 1
                stats = job.get("checkpoints")
                if stats:
                    for key, family in checkpoints.items():
                        family.add_metric([job["job"]], stats.get(key) or 0)
                for rid, snap in list(job.get("replicas", {}).items()):
                    values = [
                        job["job"],
                        snap.get("task", ""),
                        rid,
                        snap.get("worker", ""),
                    ]
                    queue = snap.get("queue")
                    if queue:
                        depth.add_metric(values, queue["depth"])
                        capacity.add_metric(values, queue["capacity"])
                    items.add_metric([*values, "in"], snap.get("items_in", 0))
                    items.add_metric([*values, "out"], snap.get("items_out", 0))
                    service.add_metric(values, snap.get("service_s", 0.0))
                    blocked.add_metric(values, snap.get("blocked_s", 0.0))
                    for family, key in (
                        (latency, "latency_hist"),
                        (service_h, "service_hist"),
                    ):
                        hist = snap.get(key)
                        if hist and len(hist["counts"]) == len(BOUNDS) + 1:
                            family.add_metric(values, cumulative(hist), hist["sum"])
        for status, n in sorted(by_status.items()):
            jobs.add_metric([status], n)
        yield from (depth, capacity, items, service, blocked, latency, service_h, jobs)
        yield from checkpoints.values()


def _checkpoint_families(counter: Any, gauge: Any) -> dict[str, Any]:
    """Per-job checkpoint metric families by the checkpoint stats key they show."""
    job = ["job"]
    return {
        "completed": counter(
            "sage_checkpoints_completed", "Checkpoints committed", labels=job
        ),
        "failed": counter("sage_checkpoints_failed", "Checkpoints failed", labels=job),
        "last_duration_s": gauge(
            "sage_checkpoint_last_duration_seconds",
            "Seconds from barrier to commit of the last checkpoint",
            labels=job,
        ),
        "last_bytes": gauge(
            "sage_checkpoint_last_bytes", "Bytes of the last checkpoint", labels=job
        ),
        "last_epoch": gauge(
            "sage_checkpoint_last_epoch", "Epoch of the last checkpoint", labels=job
        ),
        "restarts": counter(
            "sage_job_restarts", "Restarts from a checkpoint (failures)", labels=job
        ),
    }


def register_board(board: JobBoard) -> None:
    """Export ``board`` through this process's default Prometheus registry."""
    global _registered
    with _lock:
        if board not in _boards:
            _boards.append(board)
        if _registered:
            return
        _registered = True
    from prometheus_client import REGISTRY

    # outside the lock: register() calls collect() to learn the series names
    REGISTRY.register(SageCollector())


def unregister_board(board: JobBoard) -> None:
    with _lock:
        if board in _boards:
            _boards.remove(board)
