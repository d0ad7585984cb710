"""In-place rescaling of a ``LocalJob`` (mixed into it; ``compiler.rescale`` says
which operators may change and how the plan changes).

A replica is added by building and opening it beside the running ones, telling
its downstream replicas to expect its end of stream, then asking each upstream
replica's driver to route to it from its next step (``ReplicaCore.rewire``);
its thread starts last. A replica is retired by asking each upstream driver to
stop routing to it and send it an end-of-stream marker; it drains what it holds
and ends like any replica, its results and metrics kept with the job's.
A driver idle on its input queue is woken by a ``WAKE`` marker.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from sage_core.channels import BoundedQueue, QueueClosed
from sage_core.compiler.placement import ClusterView
from sage_core.compiler.rescale import (
    RescaleError,
    check_count,
    fed_by,
    feeds,
    grow,
    next_index,
    next_step,
    shrink,
)
from sage_core.observe.metrics import ReplicaMetrics
from sage_core.runtime.rewiring import WAKE
from sage_core.runtime.worker import ReplicaCore

if TYPE_CHECKING:
    from sage_core.compiler.plan import ExecutionPlan
    from sage_core.observe.traces import TraceLog
    from sage_core.runtime.deadletter import DeadLetters


class LocalRescale:
    """``scale`` of a ``LocalJob`` (see the module docstring)."""

    plan: ExecutionPlan
    job_id: str
    cores: dict[str, ReplicaCore]
    queues: dict[str, BoundedQueue]
    _outq: dict[str, list[BoundedQueue]]
    _lock: threading.Lock
    _status: str
    _running: int
    _threads: list[threading.Thread]
    _cancelled: threading.Event
    _dead: DeadLetters
    _traces: TraceLog | None
    _scale_lock: threading.Lock
    _indices: dict[str, int]
    _replica_main: Any

    def scale(self, operator: str, replicas: int) -> list[str]:
        """See ``JobHandle.scale``."""
        check_count(replicas)
        changed: list[str] = []
        with self._scale_lock:
            while True:
                task, add = next_step(self.plan, operator, replicas)
                if not task:
                    return changed
                changed.append(
                    self._add(operator, task) if add else self._retire(operator)
                )

    def _check_running(self) -> None:
        if self._status != "running" or self._cancelled.is_set():
            raise RescaleError(f"job {self.job_id} is {self._status}, not running")

    def _add(self, operator: str, task: str) -> str:
        with self._lock:
            self._check_running()
            plan, rid = grow(
                self.plan,
                operator,
                ClusterView.local(),
                index=next_index(self.plan, task, self._indices),
            )
        rp = next(r for r in plan.replicas if r.id == rid)
        metrics = ReplicaMetrics(rid, task, plan.task(task).operators)
        queue = BoundedQueue(rp.queue_capacity)
        metrics.queue = queue
        core = ReplicaCore(
            plan,
            rid,
            job_id=self.job_id,
            dead_letter=self._dead.for_replica(rid),
            traces=self._traces,
            metrics=metrics,
        )
        core.open()  # may load a model: not under the job's lock
        owes = fed_by(plan, rid)
        with self._lock:
            try:
                self._check_running()
                if any(self.cores[d].done for d in owes):
                    raise RescaleError(f"job {self.job_id} is ending")
            except BaseException:
                core.close()
                raise
            for d, owed in owes.items():
                self.cores[d].expected_eos += owed
            self.queues[rid] = queue
            outq = [self.queues[t] for t in core.targets]
            for u, channels in feeds(plan, rid).items():
                if not self._route_to(u, rid, channels, queue):
                    core.expected_eos -= len(channels)  # u has ended: owes nothing
            self.cores[rid], self._outq[rid] = core, outq
            self.plan = plan
            self._running += 1
            thread = threading.Thread(
                target=self._replica_main,
                args=(core, queue, outq, self._cancelled),
                kwargs={"joined": True},
                name=f"sage-{rid}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        return rid

    def _route_to(
        self, upstream: str, rid: str, channels: set[str], queue: BoundedQueue
    ) -> bool:
        up, outq = self.cores[upstream], self._outq[upstream]

        def change() -> list[tuple[int, Any]]:
            outq.append(queue)
            up.add_target(rid, channels)
            return []

        return self._rewire(upstream, change)

    def _retire(self, operator: str) -> str:
        with self._lock:
            self._check_running()
            plan, rid = shrink(self.plan, operator)
            for u in feeds(self.plan, rid):
                up = self.cores[u]
                # a refused change: u has sent its end of stream to rid already
                self._rewire(u, lambda up=up: up.retire_target(rid))
            self.plan = plan
        return rid

    def _rewire(self, replica: str, change: Any) -> bool:
        if not self.cores[replica].rewire(change):
            return False
        q = self.queues.get(replica)
        if q is not None:
            with contextlib.suppress(QueueClosed):
                q.try_push(WAKE)  # a full queue: its driver steps soon anyway
        return True
