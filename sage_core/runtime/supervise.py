"""Supervision of a Dask job's attempts, from the client's event loop.

``Supervision`` (mixed into ``DaskJob``) runs one attempt after another: it starts
each replica's ``run`` call, polls live metrics about once a second, posts them to
the scheduler's ``sage-jobs`` board and learns from it which workers were lost. A
replica failure or a lost worker stops the attempt (every other actor is
cancelled). Then, if the job's restart strategy allows (per operator, or the job's
``restart`` for lost workers), the master re-places every replica with the job's
placement policy on the surviving workers (the lost ones excluded; the decisions
go to the job record's ``recoveries`` and the board), creates fresh actors, restores
the last committed checkpoint on all of them and resumes; otherwise the job fails
with an error naming the replica and cause. Nothing hangs, nothing is dropped
silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sage_core.compiler.compile import replan
from sage_core.compiler.placement import ClusterView, PlacementError
from sage_core.compiler.plan import ExecutionPlan
from sage_core.observe.records import run_fields, update_record
from sage_core.runtime.actor_calls import addresses_of, call_actor, retrieve
from sage_core.runtime.cluster_view import cluster_view_async
from sage_core.runtime.deadletter import write_dead_letters
from sage_core.runtime.job_board import POLL_S, BoardReporting, WorkerLost
from sage_core.runtime.operators import OperatorFailure, decode_failure
from sage_core.runtime.transport import TransportError

if TYPE_CHECKING:
    import threading

    from sage_core.runtime.dask_checkpoint import MasterCheckpoints
    from sage_core.runtime.recovery import JobRecovery

logger = logging.getLogger(__name__)
_perf = time.perf_counter

#: seconds a cancelled or failed job waits for its replicas to report back
STOP_GRACE_S = 10.0
#: seconds a transport failure waits for the scheduler to say whether a worker left
#: (a peer's dead connection is usually seen before the scheduler removes it)
LOST_GRACE_S = 5.0


class Supervision(BoardReporting):
    """The attempts of a ``DaskJob`` (see the module docstring)."""

    client: Any
    plan: ExecutionPlan
    job_id: str
    recovery: JobRecovery
    _status: str
    _error: BaseException | None
    _restart_in: float | None
    _done: threading.Event
    _outcomes: dict[str, dict[str, Any]]
    _live: dict[str, dict[str, Any]]
    _next_metrics: float
    _actors: dict[str, Any]
    _futures: list[Any]
    _started: float
    _ended: float
    _where: dict[str, str]
    _stopping: bool
    _attempt: int
    _checkpoints: MasterCheckpoints | None
    _lost: set[str]
    _failures: list[BaseException]
    _last_cause: BaseException | None
    _history: list[dict[str, Any]]
    _runs: dict[Any, str]
    _pending: set[Any]
    _launch: Callable[[dict[str, str]], Awaitable[None]]
    _record: Callable[[dict[str, str]], dict[str, Any]]
    metrics: Callable[[], dict[str, Any]]

    async def _run_one(self, rid: str) -> dict[str, Any]:
        return await call_actor(self._actors[rid], "run")

    async def _supervise(self) -> None:
        try:
            while True:
                await self._run_attempt()
                if self._restart_in is None or not await self._restart():
                    break
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
        # replicas added while the attempt runs (``DaskRescale``) join both
        runs = self._runs = {
            asyncio.ensure_future(self._run_one(rid)): rid for rid in self._actors
        }
        pending = self._pending = set(runs)
        next_poll = _perf() + POLL_S
        self._stopping = False
        while pending:
            timeout = max(0.0, next_poll - _perf())
            done, _ = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            pending -= done
            for fut in done:
                self._collect(runs[fut], fut)
            if self._failures:
                failed_at = _perf()
                await self._stop(pending, runs)
                await self._confirm_lost(failed_at, runs)
                break
            if _perf() >= next_poll:
                next_poll = _perf() + POLL_S
                lost = await self._poll()
                if lost:
                    self._worker_lost(lost, {runs[f] for f in pending})
                    await self._stop(pending, runs)
                    break
        await self._checkpoints.stop()
        self._decide()

    def _worker_lost(self, lost: list[str], running: set[str]) -> None:
        self._lost.update(lost)
        hosted = sorted(rid for rid in running if self._worker_of(rid) in lost)
        self._failure(
            WorkerLost(
                f"worker(s) {', '.join(lost)} left the cluster while "
                f"hosting replica(s) {', '.join(hosted) or '(finished)'}"
                f" of job {self.job_id}"
            )
        )

    async def _confirm_lost(self, since: float, runs: dict[Any, str]) -> None:
        """After a transport failure, ask the scheduler whether a worker of the job
        left (for up to ``LOST_GRACE_S``): a replica usually sees its peer's
        connection die before the scheduler removes the worker, and the lost
        worker, not the failed send, is the cause."""
        if any(isinstance(f, (OperatorFailure, WorkerLost)) for f in self._failures):
            return
        if not any(isinstance(f, (TransportError, OSError)) for f in self._failures):
            return
        ours = set(self._where.values())
        while True:
            try:
                lost = [w for w in await self._post_board() if w in ours]
            except WorkerLost as exc:  # the scheduler itself is gone
                self._failure(exc)
                return
            if lost:
                self._worker_lost(lost, set(runs.values()))
                return
            if _perf() - since >= LOST_GRACE_S:
                return
            await asyncio.sleep(0.25)

    async def _restart(self) -> bool:
        """Re-place every replica on the surviving workers and start a new attempt
        from the last committed checkpoint (False: the job was cancelled meanwhile)."""
        delay, self._restart_in = self._restart_in or 0.0, None
        await self._finalize(commit=False)
        self._futures, self._actors = [], {}
        await asyncio.sleep(delay)
        if self._status != "running":
            return False  # cancelled while waiting
        self.recovery.rewind()
        plan = await self._replace()
        if plan is None:
            return False  # cancelled while waiting for workers
        self.plan = plan
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
        return True

    async def _replace(self) -> ExecutionPlan | None:
        """The plan re-placed on the surviving workers; while no worker satisfies
        some replica's contract (its GPU workers are gone), wait for one to join,
        saying so, for up to ``replace_wait_s`` (None: cancelled meanwhile).

        Raises:
            PlacementError: still no fitting worker after ``replace_wait_s``.
        """
        deadline = _perf() + self.plan.settings.replace_wait_s
        said = None
        while True:
            view = await cluster_view_async(self.client)
            view = ClusterView(
                tuple(w for w in view.workers if w.address not in self._lost)
            )
            alive = {w.address for w in view.workers}
            self._lost.update(a for a in self._where.values() if a not in alive)
            try:
                plan = replan(self.plan, view)
            except PlacementError as exc:
                if _perf() >= deadline:
                    raise
                if str(exc) != said:
                    said = str(exc)
                    logger.warning(
                        "job %s waits up to %.0f s for a worker to join before it "
                        "restarts: %s",
                        self.job_id,
                        deadline - _perf(),
                        exc,
                    )
                    update_record(self.job_id, waiting_for_workers=said)
            else:
                if said is not None:
                    update_record(self.job_id, waiting_for_workers=None)
                return plan
            await asyncio.sleep(POLL_S)
            if self._status != "running":
                return None

    def _recoveries(self, addresses: dict[str, str]) -> list[dict[str, Any]]:
        self._history.append(
            {
                "attempt": self._attempt + 1,
                "at": time.time(),
                "cause": str(self._last_cause),
                "excluded": sorted(self._lost),
                "restored_epoch": self.recovery.restore_epoch,
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
                await call_actor(actor, "finalize", commit)
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
            self._lost.add(self._worker_of(rid))
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
        replicas it causes elsewhere; a lost worker is the cause over the transport
        errors its absence causes."""
        failures, self._failures = self._failures, []
        if not failures:
            return
        ops = [f for f in failures if isinstance(f, OperatorFailure)]
        lost = [f for f in failures if isinstance(f, WorkerLost)]
        cause = (ops or lost or failures)[0]
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
        async def cancel(actor: Any) -> None:
            try:
                await call_actor(actor, "cancel")
            except Exception as exc:  # noqa: BLE001 - a lost actor stops anyway
                logger.debug("cancel failed: %r", exc)

        calls = [
            asyncio.ensure_future(cancel(a))
            for rid, a in self._actors.items()
            if self._worker_of(rid) not in self._lost  # a dead worker never answers
        ]
        if calls:
            await asyncio.wait(calls, timeout=STOP_GRACE_S)

    async def _stop(self, pending: set[Any], runs: dict[Any, str]) -> None:
        self._stopping = True
        await self._cancel_all()
        lost = {f for f in pending if self._worker_of(runs[f]) in self._lost}
        for fut in lost:  # their calls fail later, when the comm gives up
            fut.add_done_callback(retrieve)
        pending = pending - lost
        if pending:
            done, left = await asyncio.wait(pending, timeout=STOP_GRACE_S)
            for fut in done:
                self._collect(runs[fut], fut)
            for fut in left:  # replicas on a lost worker: their calls end later
                fut.add_done_callback(retrieve)

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
                checkpoints=self._checkpoint_stats(),
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
            **run_fields(self._ended - self._started, self.metrics(), self._traces()),
        )

    def _traces(self) -> list[dict[str, Any]]:
        return [t for o in self._outcomes.values() for t in o["traces"]]
