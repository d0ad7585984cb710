"""DaskRuntime and its job master: a plan's replicas as actors on a Dask cluster.

``DaskRuntime(client).submit(plan)`` creates one ``ReplicaActor`` per replica on the
worker its placement chose (``workers=[address]``, never elsewhere), wires every
replica to its downstream replicas (``connect``), opens them all (a barrier: nothing
moves before every operator is open), then starts each replica's ``run`` call. The
master (``DaskJob``) runs on the client's event loop: it collects each replica's
outcome, polls live metrics about once a second, posts them to the scheduler's
``sage-jobs`` board, and stops the whole job at the first replica failure or when a
worker hosting one of its replicas leaves the cluster. Such a job fails with an error
naming the replica and cause; nothing hangs and nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any

from sage_core.common.errors import SageError
from sage_core.compiler.compile import replan
from sage_core.compiler.placement import ClusterView
from sage_core.compiler.plan import ExecutionPlan
from sage_core.observe.metrics import aggregate
from sage_core.observe.records import save_record, update_record
from sage_core.runtime.cluster_view import (
    cluster_view,
    cluster_view_async,
    replica_demand,
)
from sage_core.runtime.dask_actor import ReplicaActor, decode_failure
from sage_core.runtime.dask_checkpoint import MasterCheckpoints
from sage_core.runtime.deadletter import write_dead_letters
from sage_core.runtime.job import JobFailed, JobHandle, JobResult
from sage_core.runtime.operators import OperatorFailure
from sage_core.runtime.recovery import JobRecovery
from sage_core.runtime.scheduler_ext import install_on

logger = logging.getLogger(__name__)
_perf = time.perf_counter

#: seconds between metrics polls / board updates / lost-worker checks
POLL_S = 1.0
#: seconds a cancelled or failed job waits for its replicas to report back
STOP_GRACE_S = 10.0


class WorkerLost(SageError):
    """A worker hosting replicas of the job left the cluster."""


class ReplicaStartError(SageError):
    """A replica actor could not be created, wired or opened on its worker."""


class DaskJob(JobHandle):
    """A plan running as actors on a Dask cluster (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        plan: ExecutionPlan,
        *,
        job_id: str | None = None,
        priority: int = 0,
        resume: bool = False,
    ) -> None:
        self.client, self.plan = client, plan
        self.job_id = job_id or f"{plan.job}-{uuid.uuid4().hex[:8]}"
        self.priority = priority
        self.recovery = JobRecovery(plan, self.job_id, resume=resume)
        self._status = "created"
        self._error: BaseException | None = None
        self._restart_in: float | None = None
        self._done = threading.Event()
        self._outcomes: dict[str, dict[str, Any]] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._actors: dict[str, Any] = {}
        self._futures: list[Any] = []
        self._started = self._ended = 0.0
        self._where: dict[str, str] = {}
        self._stopping = False
        self._attempt = 0
        self._checkpoints: MasterCheckpoints | None = None
        self._lost: set[str] = set()
        self._failures: list[BaseException] = []
        self._last_cause: BaseException | None = None
        self._history: list[dict[str, Any]] = []

    # -- start -----------------------------------------------------------------

    def _addresses(self) -> dict[str, str]:
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        return addresses_of(self.plan, info)

    def _record(self, addresses: dict[str, str]) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "name": self.plan.job,
            "runtime": "dask",
            "scheduler": self.client.scheduler.address,
            "policy": self.plan.policy,
            "priority": self.priority,
            "status": "running",
            "submitted": time.time(),
            "plan": self.plan.to_dict(),
            "placement": {
                rid: {"worker": addresses[rid], **replica_demand(self.plan, rid)}
                for rid in addresses
            },
        }

    def start(self) -> DaskJob:
        """Create, wire and open every replica, then start them.

        Raises:
            ReplicaStartError: an actor failed to start or open (named, with cause).
        """
        client = self.client
        client.run_on_scheduler(install_on)
        addresses = self._addresses()
        record = self._record(addresses)
        save_record(record)
        client.sync(client.scheduler.sage_job_submit, record=record)
        self._started = _perf()
        try:
            client.sync(self._launch, addresses)
        except BaseException as exc:
            self._status = "failed"
            self._error = exc
            self._finish_record()
            self._futures = []
            raise
        self._status = "running"
        client.loop.add_callback(self._supervise)
        return self

    async def _launch(self, addresses: dict[str, str]) -> None:
        """Create, wire, restore and open one attempt's actors."""
        client = self.client
        self._where = addresses
        self._attempt += 1
        self._outcomes, self._actors = {}, {}
        plan_json = self.plan.to_json()
        futures = {
            rid: client.submit(
                ReplicaActor,
                plan_json,
                rid,
                self.job_id,
                actor=True,
                workers=[address],
                allow_other_workers=False,
                key=f"sage-{self.job_id}-{rid}-{self._attempt}",
                pure=False,
            )
            for rid, address in addresses.items()
        }
        self._futures = list(futures.values())
        for rid, fut in futures.items():
            try:
                self._actors[rid] = await asyncio.wait_for(fut._result(), 120)
            except Exception as exc:
                await self._cancel_all()
                raise ReplicaStartError(
                    f"replica {rid} could not start on {addresses[rid]}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        cp = self.recovery.restoring()
        store = self.recovery.store
        where = None
        if cp is not None and store is not None:
            where = (store.url, store.retained, cp.epoch)
        await self._wire(addresses, {r: f.key for r, f in futures.items()}, where)
        plan = self.plan
        self._checkpoints = MasterCheckpoints(
            self.recovery,
            self._actors,
            _replicas_with(plan, "source", 0),
            _replicas_with(plan, "sink", -1),
            asyncio.get_running_loop(),
        )

    async def _wire(
        self,
        addresses: dict[str, str],
        keys: dict[str, str],
        restore: tuple[str, int, int] | None,
    ) -> None:
        targets = {rid: (addresses[rid], keys[rid]) for rid in addresses}
        for stage, call in (
            ("connect", lambda a: a.connect(targets)),
            ("open", lambda a: a.open(restore)),
        ):
            calls = {rid: call(a) for rid, a in self._actors.items()}
            for rid, fut in calls.items():
                try:
                    await fut
                except Exception as exc:
                    await self._cancel_all()
                    raise ReplicaStartError(
                        f"replica {rid} failed to {stage} on {addresses[rid]}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc

    # -- supervision -------------------------------------------------------------

    async def _run_one(self, rid: str) -> dict[str, Any]:
        return await _call(self._actors[rid], "run")

    async def _supervise(self) -> None:
        try:
            while True:
                await self._run_attempt()
                if self._restart_in is None:
                    break
                await self._restart()
            if self._status == "running":
                await self._finalize(commit=True)
        except Exception as exc:
            logger.exception("job master of %s failed", self.job_id)
            self._fail(exc)
        finally:
            if self._checkpoints is not None:
                await self._checkpoints.stop()
            await self._finish()

    async def _run_attempt(self) -> None:
        assert self._checkpoints is not None
        self._checkpoints.start()
        runs = {asyncio.ensure_future(self._run_one(rid)): rid for rid in self._actors}
        pending = set(runs)
        next_poll = _perf() + POLL_S
        self._stopping = False
        while pending:
            timeout = max(0.0, next_poll - _perf())
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for fut in done:
                self._collect(runs[fut], fut)
            if self._failures:
                await self._stop(pending, runs)
                break
            if _perf() >= next_poll:
                next_poll = _perf() + POLL_S
                lost = await self._poll()
                if lost:
                    self._lost.update(lost)
                    hosted = sorted(
                        rid
                        for f, rid in runs.items()
                        if f in pending and self._worker_of(rid) in lost
                    )
                    self._failure(
                        WorkerLost(
                            f"worker(s) {', '.join(lost)} left the cluster while "
                            f"hosting replica(s) {', '.join(hosted) or '(finished)'}"
                            f" of job {self.job_id}"
                        )
                    )
                    await self._stop(pending, runs)
                    break
        await self._checkpoints.stop()
        self._decide()

    async def _restart(self) -> None:
        """Re-place every replica on the surviving workers and start a new attempt
        from the last committed checkpoint."""
        delay, self._restart_in = self._restart_in or 0.0, None
        await self._finalize(commit=False)
        self._futures, self._actors = [], {}
        await asyncio.sleep(delay)
        self.recovery.rewind()
        view = await cluster_view_async(self.client)
        view = ClusterView(
            tuple(w for w in view.workers if w.address not in self._lost)
        )
        alive = {w.address for w in view.workers}
        self._lost.update(a for a in self._where.values() if a not in alive)
        self.plan = replan(self.plan, view)
        info = (await self.client.scheduler.identity(n_workers=-1))["workers"]
        addresses = addresses_of(self.plan, info)
        record = self._record(addresses)
        record["attempt"] = self._attempt + 1
        await self.client.scheduler.sage_job_submit(record=record)
        update_record(
            self.job_id,
            plan=record["plan"],
            placement=record["placement"],
            recoveries=self._recoveries(addresses),
        )
        await self._launch(addresses)

    def _recoveries(self, addresses: dict[str, str]) -> list[dict[str, Any]]:
        self._history.append(
            {
                "attempt": self._attempt + 1,
                "at": time.time(),
                "cause": str(self._last_cause),
                "excluded": sorted(self._lost),
                "restored_epoch": self.recovery.stats.restored_epoch,
                "placement": {r.id: r.placement.to_dict() for r in self.plan.replicas},
                "addresses": dict(addresses),
            }
        )
        return list(self._history)

    async def _finalize(self, *, commit: bool) -> None:
        """Close finished transactional sinks (publishing their output if ``commit``)."""
        for rid, actor in self._actors.items():
            if self._worker_of(rid) in self._lost:
                continue
            try:
                await _call(actor, "finalize", commit)
            except Exception as exc:
                if commit:
                    raise
                logger.debug("finalize of %s after a failure: %r", rid, exc)

    def _worker_of(self, rid: str) -> str:
        return self._where.get(rid, "")

    def _collect(self, rid: str, fut: asyncio.Future[Any]) -> None:
        try:
            outcome = fut.result()
        except (OSError, RuntimeError) as exc:  # the actor's worker is gone
            self._failure(
                WorkerLost(
                    f"replica {rid} on worker {self._worker_of(rid)} stopped answering"
                    f" ({exc}); the worker left the cluster or crashed"
                )
            )
            return
        except BaseException as exc:  # noqa: BLE001 - the call itself failed
            self._failure(
                exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
            )
            return
        self._outcomes[rid] = outcome
        self._live[rid] = outcome["metrics"]
        if outcome["status"] == "failed":
            self._failure(decode_failure(outcome["error"]))
        elif outcome["status"] == "succeeded" and self._checkpoints is not None:
            self._checkpoints.finished(rid, outcome.get("final"))

    def _failure(self, exc: BaseException) -> None:
        """A replica failed or was lost; ``_decide`` weighs it once the attempt
        stopped."""
        self._failures.append(exc)

    def _decide(self) -> None:
        """Restart (the strategy permitting) or fail, after the attempt's failures.

        The first operator failure is the cause, over the transport errors and lost
        replicas it causes elsewhere."""
        failures, self._failures = self._failures, []
        if not failures:
            return
        ops = [f for f in failures if isinstance(f, OperatorFailure)]
        cause = ops[0] if ops else failures[0]
        if self._error is None and self._status == "running":
            delay = self.recovery.restart_delay(cause)
            if delay is not None:
                self._restart_in, self._last_cause = delay, cause
                return
        self._fail(cause)

    def _fail(self, exc: BaseException) -> None:
        # the first operator failure wins over the transport errors it causes
        if self._error is None or (
            isinstance(exc, OperatorFailure)
            and not isinstance(self._error, OperatorFailure)
        ):
            self._error = exc
        if self._status in ("running", "created"):
            self._status = "failed"

    async def _cancel_all(self) -> None:
        calls = [_call(a, "cancel") for a in self._actors.values()]
        if calls:
            await asyncio.wait(
                [asyncio.ensure_future(c) for c in calls], timeout=STOP_GRACE_S
            )

    async def _stop(self, pending: set[Any], runs: dict[Any, str]) -> None:
        self._stopping = True
        await self._cancel_all()
        if pending:
            done, left = await asyncio.wait(pending, timeout=STOP_GRACE_S)
            for fut in done:
                self._collect(runs[fut], fut)
            for fut in left:  # replicas on a lost worker: their calls end later
                fut.add_done_callback(_retrieve)

    async def _poll(self) -> list[str]:
        async def one(rid: str, actor: Any) -> None:
            try:
                self._live[rid] = await asyncio.wait_for(_call(actor, "snapshot"), 2.0)
            except Exception:  # noqa: BLE001 - a slow or gone replica: keep the last
                return

        live = [
            one(rid, a) for rid, a in self._actors.items() if rid not in self._outcomes
        ]
        await asyncio.gather(*live)
        try:
            lost = await self.client.scheduler.sage_job_update(
                job=self.job_id, status=self._status, replicas=dict(self._live)
            )
        except Exception as exc:
            raise WorkerLost(f"the scheduler stopped answering: {exc}") from exc
        return list(lost)

    async def _finish(self) -> None:
        self._ended = _perf()
        if self._status == "running":
            self._status = "succeeded"
        try:
            await self.client.scheduler.sage_job_update(
                job=self.job_id,
                status=self._status,
                replicas=dict(self._live),
                error=str(self._error) if self._error else None,
            )
        except Exception as exc:  # noqa: BLE001 - the board is informational
            logger.warning("could not post the end of %s: %s", self.job_id, exc)
        self._finish_record()
        records = [r for o in self._outcomes.values() for r in o["dead_letters"]]
        write_dead_letters(self.plan, self.job_id, records)
        self._futures = []  # with the handles: releases the actors on their workers
        self._actors = {}
        self._done.set()

    def _finish_record(self) -> None:
        update_record(
            self.job_id,
            status=self._status,
            error=str(self._error) if self._error else None,
            finished=time.time(),
        )

    # -- JobHandle ---------------------------------------------------------------

    def cancel(self) -> None:
        if self._status == "running":
            self._status = "cancelled"
        if self._actors and not self._done.is_set():
            self.client.sync(self._cancel_all)

    def status(self) -> str:
        return self._status

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> JobResult:
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.job_id} still running after {timeout} s")
        if self._status == "failed":
            assert self._error is not None
            raise JobFailed(self.job_id, self._error) from self._error
        return self._result()

    def metrics(self) -> dict[str, Any]:
        replicas = dict(self._live)
        out: dict[str, Any] = {
            "operators": aggregate(replicas.values()) if replicas else {},
            "replicas": replicas,
        }
        if self.recovery.store is not None or self.recovery.stats.restarts:
            out["checkpoints"] = self.recovery.stats.snapshot()
        return out

    def placement(self) -> list[dict[str, Any]]:
        """Every placement decision of the job (candidates, filters, scores, choice)."""
        return [r.placement.to_dict() for r in self.plan.replicas]

    def _result(self) -> JobResult:
        results: dict[str, list[Any]] = {}
        states: dict[str, Any] = {}
        for r in self.plan.replicas:
            outcome = self._outcomes.get(r.id)
            if outcome is None:
                continue
            if outcome["result"] is not None:
                sink = self.plan.task(r.task).operators[-1]
                results.setdefault(sink, []).append(outcome["result"])
            if outcome["state"]:
                states[r.id] = outcome["state"]
        return JobResult(
            job_id=self.job_id,
            status=self._status,
            duration_s=(self._ended or _perf()) - self._started,
            metrics=self.metrics(),
            results=results,
            dead_letters=[
                r for o in self._outcomes.values() for r in o["dead_letters"]
            ],
            states=states,
            traces=[t for o in self._outcomes.values() for t in o["traces"]],
        )


def addresses_of(plan: ExecutionPlan, workers: dict[str, Any]) -> dict[str, str]:
    """Each replica's worker address (``workers``: the scheduler's worker info).

    Raises:
        ReplicaStartError: a replica is placed on a worker the cluster lacks.
    """
    by_name = {str(w.get("name", a)): a for a, w in workers.items()}
    by_name.update({a: a for a in workers})
    out = {}
    for r in plan.replicas:
        address = by_name.get(r.placement.worker)
        if address is None:
            raise ReplicaStartError(
                f"replica {r.id} is placed on worker {r.placement.worker!r}, "
                f"which this cluster does not have (workers: "
                f"{', '.join(sorted(by_name))}); compile against this cluster"
            )
        out[r.id] = address
    return out


def _replicas_with(plan: ExecutionPlan, role: str, at: int) -> list[str]:
    """Replicas whose chain has a ``role`` operator at position ``at``."""
    return [
        r.id
        for r in plan.replicas
        if plan.operator(plan.task(r.task).operators[at]).role == role
    ]


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _call(actor: Any, method: str, *args: Any) -> Any:
    """``await actor.method(*args)``; a lost actor raises here, not at attribute
    access."""
    return await getattr(actor, method)(*args)


class DaskRuntime:
    """Runs ExecutionPlans as actors on the cluster of ``client``."""

    name = "dask"

    def __init__(self, client: Any) -> None:
        self.client = client

    def cluster_view(self) -> ClusterView:
        return cluster_view(self.client)

    def submit(
        self,
        plan: ExecutionPlan,
        *,
        job_id: str | None = None,
        priority: int = 0,
        resume: bool = False,
    ) -> DaskJob:
        """Start ``plan`` (placed against this cluster); returns its handle.

        Args:
            resume: restore job ``job_id``'s last committed checkpoint first.

        Raises:
            CheckpointDirError: the checkpoint directory is unusable.
            CheckpointNotFound: ``resume`` and no usable checkpoint.
            ReplicaStartError: an actor failed to start or open.
        """
        job = DaskJob(
            self.client, plan, job_id=job_id, priority=priority, resume=resume
        )
        return job.start()
