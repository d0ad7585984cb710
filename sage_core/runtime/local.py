"""LocalRuntime: a plan executed in this process, one thread per replica.

Each replica gets a native ``BoundedQueue`` (capacity from the plan) unless it is a
source. A thread drives its ``ReplicaCore``: pop what is available (up to the
packets its last step's pace allows, ``ReplicaCore.pace``), process, push the
outbound packets with blocking backpressure.
Cancel and failure close every queue, which wakes every blocked thread at once.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from typing import Any

from sage_core.channels import BoundedQueue, QueueClosed
from sage_core.compiler.plan import ExecutionPlan
from sage_core.observe.metrics import ReplicaMetrics
from sage_core.observe.traces import TraceLog
from sage_core.runtime.barriers import checkpoint
from sage_core.runtime.deadletter import DeadLetters
from sage_core.runtime.job import JobFailed, JobHandle, JobResult
from sage_core.runtime.local_rescale import LocalRescale
from sage_core.runtime.operators import OperatorFailure
from sage_core.runtime.recovery import JobRecovery
from sage_core.runtime.transport import entered, handed_over
from sage_core.runtime.worker import ReplicaCore

logger = logging.getLogger(__name__)
_perf = time.perf_counter


def _push_all(
    core: ReplicaCore, queues: list[BoundedQueue], outbound: list[tuple[int, Any]]
) -> None:
    blocked = 0.0
    for slot, packet in outbound:
        q = queues[slot]
        if type(packet) is tuple and packet[3]:  # traced
            handed_over((packet,))
        if not q.try_push(packet):
            # wait for room, then push it stamped with when it went in: its queue
            # wait starts there (the wait for room is this step's blocked time)
            t0 = now = _perf()
            while True:
                q.wait_room()
                now = _perf()
                handed_over((packet,))
                if q.try_push(entered(packet, now)):
                    break
            blocked += now - t0
    if blocked:
        core.note_blocked(blocked)


def _pressure(q: BoundedQueue) -> int:
    size = q.size
    return 0 if not size else (2 if size >= q.capacity else 1)


def drive(
    core: ReplicaCore,
    inq: BoundedQueue | None,
    queues: list[BoundedQueue],
    cancelled: threading.Event,
) -> None:
    """Run one replica to the end of its input (blocking; the thread driver)."""
    core.load_of = lambda slot: float(queues[slot].size)
    core.pressure_of = lambda slot: _pressure(queues[slot])
    if core.is_source:
        produce = core.produce
        while not cancelled.is_set():
            if core.rewires:
                _push_all(core, queues, core.apply_rewires())
            if core.barrier_request > core.epoch:
                _push_all(core, queues, checkpoint(core, core.barrier_request))
            out = produce()
            if out is None:
                break
            if out:
                _push_all(core, queues, out)
    else:
        assert inq is not None
        pop_many, handle, m = inq.pop_many, core.handle, core.metrics
        while not core.done:
            if core.rewires:
                _push_all(core, queues, core.apply_rewires())
            wait = core.wait_hint(_perf())
            packets = pop_many(core.take, 0)
            if not packets:
                t0 = _perf()
                packets = pop_many(core.take, wait)
                m.idle_s += _perf() - t0
            out = handle(packets)
            if out:
                _push_all(core, queues, out)
    if not cancelled.is_set():
        _push_all(core, queues, core.finish())


class LocalJob(LocalRescale, JobHandle):
    """A plan running on threads of this process (one attempt after another when
    a restart strategy restarts it from its last checkpoint)."""

    def __init__(
        self, plan: ExecutionPlan, *, job_id: str | None = None, resume: bool = False
    ) -> None:
        self.plan = plan
        self.job_id = job_id or f"{plan.job}-{uuid.uuid4().hex[:8]}"
        settings = plan.settings
        self.recovery = JobRecovery(plan, self.job_id, resume=resume)
        self._traces = TraceLog(settings.trace_path) if settings.trace_every else None
        self._dead = DeadLetters(plan, self.job_id)
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._running = 0
        self._status = "created"
        self._error: BaseException | None = None
        self._restart_in: float | None = None
        self._finished = False
        self._started = 0.0
        self._ended = 0.0
        self._threads: list[threading.Thread] = []
        self._scale_lock = threading.Lock()
        self._indices: dict[str, int] = {}
        self._new_attempt()

    def _new_attempt(self) -> None:
        plan = self.plan
        self._cancelled = threading.Event()
        self._results: dict[str, list[Any]] = {}
        self._states: dict[str, dict[str, Any]] = {}
        self._deferred: list[ReplicaCore] = []
        self.queues: dict[str, BoundedQueue] = {
            r.id: BoundedQueue(r.queue_capacity)
            for r in plan.replicas
            if r.queue_capacity
        }
        self.cores: dict[str, ReplicaCore] = {}
        self._outq: dict[str, list[BoundedQueue]] = {}
        self._barrier = threading.Barrier(max(1, len(plan.replicas)))

    def start(self) -> LocalJob:
        """Build every replica (operator constructors run here), then start threads.

        Raises:
            SageError: an operator could not be built (config, plugin factory), or
                a checkpoint does not fit the plan.
        """
        try:
            self._build()
        except BaseException:
            self._dead.close()
            raise
        self._status = "running"
        self._started = _perf()
        self._launch()
        return self

    def _build(self) -> None:
        for r in self.plan.replicas:
            metrics = ReplicaMetrics(r.id, r.task, self.plan.task(r.task).operators)
            metrics.queue = self.queues.get(r.id)
            self.cores[r.id] = ReplicaCore(
                self.plan,
                r.id,
                job_id=self.job_id,
                dead_letter=self._dead.for_replica(r.id),
                traces=self._traces,
                metrics=metrics,
            )
        self.recovery.prepare(self.cores)

    def _launch(self) -> None:
        self._running = len(self.cores)
        threads = []
        for rid, core in self.cores.items():
            queues = self._outq[rid] = [self.queues[t] for t in core.targets]
            threads.append(
                threading.Thread(
                    target=self._replica_main,
                    args=(core, self.queues.get(rid), queues, self._cancelled),
                    name=f"sage-{rid}",
                    daemon=True,
                )
            )
        self._threads += threads
        self.recovery.start()
        for t in threads:
            t.start()

    def _replica_main(
        self,
        core: ReplicaCore,
        inq: BoundedQueue | None,
        queues: list[BoundedQueue],
        cancelled: threading.Event,
        *,
        joined: bool = False,
    ) -> None:
        """A replica's thread; ``joined``: added while the job runs, already open."""
        opened, finished = joined, False
        try:
            if not joined:
                try:
                    core.open()
                except BaseException:
                    self._barrier.abort()
                    raise
                opened = True
                # every replica is open before any item moves (sinks sharing a
                # file, models loaded before the first batch)
                self._barrier.wait()
            drive(core, inq, queues, cancelled)
            if not cancelled.is_set():
                self.recovery.replica_finished(core)
                finished = True
        except (QueueClosed, threading.BrokenBarrierError) as exc:
            # the job was cancelled, or another replica failed and closed the
            # queues (that failure is the one recorded): this replica just stops
            logger.debug("replica %s stopped: %r", core.replica, exc)
        except BaseException as exc:  # noqa: BLE001 - recorded, fails the job
            self._fail(exc, core)
        finally:
            # a transactional sink's output waits for the job's end (commit_final)
            defer = finished and core.is_sink and self.recovery.checkpointing
            if opened and not defer:
                try:
                    core.close()
                except Exception as exc:  # noqa: BLE001
                    self._fail(exc, core)
            try:
                result = core.results()
                state = core.state()
            except Exception as exc:  # noqa: BLE001
                self._fail(exc, core)
                result, state = None, {}
            with self._lock:
                if defer:
                    self._deferred.append(core)
                if result is not None:
                    self._results.setdefault(core.ops[-1].name, []).append(result)
                if state:
                    self._states[core.replica] = state
                self._running -= 1
                if self._running == 0:
                    self._attempt_over_locked()

    def _attempt_over_locked(self) -> None:
        self.recovery.stop()
        if self._restart_in is not None:
            delay, self._restart_in = self._restart_in, None
            self._close_deferred(commit=False)
            threading.Thread(
                target=self._restart, args=(delay,), name="sage-restart", daemon=True
            ).start()
            return
        self._finish_locked()

    def _restart(self, delay: float) -> None:
        time.sleep(delay)
        with self._lock:
            if self._status != "running":  # cancelled while waiting
                self._finish_locked()
                return
            self._new_attempt()
            try:
                self.recovery.rewind()
                self._build()
            except BaseException as exc:  # noqa: BLE001 - the restore failed
                self._error, self._status = exc, "failed"
                self._finish_locked()
                return
            self._launch()

    def _close_deferred(self, *, commit: bool) -> None:
        deferred, self._deferred = self._deferred, []
        try:
            if commit:
                self.recovery.commit_final({c.replica: c for c in deferred})
        except Exception as exc:  # noqa: BLE001 - the output could not be published
            self._error, self._status = exc, "failed"
        for core in deferred:
            try:
                core.close()
            except Exception as exc:  # noqa: BLE001
                if self._error is None:
                    self._error, self._status = exc, "failed"

    def _finish_locked(self) -> None:
        self._close_deferred(commit=self._status == "running")
        self._ended = _perf()
        self._finished = True
        if self._status == "running":
            self._status = "succeeded"
        self._dead.close()
        if self._traces is not None:
            self._traces.close()
        self._done.notify_all()

    def _fail(self, exc: BaseException, core: ReplicaCore) -> None:
        with self._lock:
            if self._error is None and self._status == "running":
                if self._cancelled.is_set():
                    return  # this attempt is already stopping
                delay = self.recovery.restart_delay(exc)
                if delay is not None:
                    self._restart_in = delay
                else:
                    self._error = exc
                    self._status = "failed"
                    if not isinstance(exc, OperatorFailure):
                        logger.error("replica %s failed: %r", core.replica, exc)
        self._stop()

    def _stop(self) -> None:
        self._cancelled.set()
        self._barrier.abort()
        for q in self.queues.values():
            q.close()

    # -- JobHandle -------------------------------------------------------------

    def cancel(self) -> None:
        with self._lock:
            if self._status == "running":
                self._status = "cancelled"
        self._stop()

    def status(self) -> str:
        return self._status

    def done(self) -> bool:
        return self._finished

    def wait(self, timeout: float | None = None) -> JobResult:
        with self._lock:
            if not self._done.wait_for(lambda: self._finished, timeout):
                raise TimeoutError(f"job {self.job_id} still running after {timeout} s")
        for t in self._threads:
            t.join()
        if self._status == "failed":
            assert self._error is not None
            if isinstance(self._error, OperatorFailure):
                raise JobFailed(self.job_id, self._error) from self._error
            raise JobFailed(self.job_id, self._error) from self._error
        return self._result()

    def metrics(self) -> dict[str, Any]:
        from sage_core.observe.metrics import aggregate

        replicas = [c.metrics.snapshot() for c in self.cores.values()]
        out = {
            "operators": aggregate(replicas),
            "replicas": {s["replica"]: s for s in replicas},
        }
        if self.recovery.store is not None or self.recovery.stats.restarts:
            out["checkpoints"] = self.recovery.metrics()
        return out

    def traces(self) -> list[dict[str, Any]]:
        return self._traces.records() if self._traces is not None else []

    def _result(self) -> JobResult:
        return JobResult(
            job_id=self.job_id,
            status=self._status,
            duration_s=(self._ended or _perf()) - self._started,
            metrics=self.metrics(),
            results=dict(self._results),
            dead_letters=self._dead.records(),
            states=dict(self._states),
            traces=self.traces(),
        )


class LocalRuntime:
    """Runs ExecutionPlans on threads of this process."""

    name = "local"
    _ids = itertools.count()

    def submit(
        self, plan: ExecutionPlan, *, job_id: str | None = None, resume: bool = False
    ) -> LocalJob:
        """Start ``plan``; returns its job handle at once.

        Args:
            plan: the placed plan.
            job_id: the job's id (default: a fresh one).
            resume: restore job ``job_id``'s last committed checkpoint first.

        Raises:
            CheckpointDirError: the checkpoint directory is unusable.
            CheckpointNotFound: ``resume`` and no usable checkpoint.
        """
        return LocalJob(plan, job_id=job_id, resume=resume).start()
