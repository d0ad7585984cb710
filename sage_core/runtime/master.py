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
from sage_core.compiler.placement import ClusterView
from sage_core.compiler.plan import ExecutionPlan
from sage_core.observe.metrics import aggregate
from sage_core.observe.records import run_fields, save_record, update_record
from sage_core.runtime.cluster_view import cluster_view, replica_demand
from sage_core.runtime.dask_actor import ReplicaActor, decode_failure
from sage_core.runtime.job import JobFailed, JobHandle, JobResult
from sage_core.runtime.operators import OperatorFailure, build_function
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
    ) -> None:
        self.client, self.plan = client, plan
        self.job_id = job_id or f"{plan.job}-{uuid.uuid4().hex[:8]}"
        self.priority = priority
        self._status = "created"
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._outcomes: dict[str, dict[str, Any]] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._actors: dict[str, Any] = {}
        self._futures: list[Any] = []
        self._started = self._ended = 0.0
        self._where: dict[str, str] = {}
        self._stopping = False

    # -- start -----------------------------------------------------------------

    def _addresses(self) -> dict[str, str]:
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        by_name = {str(w.get("name", a)): a for a, w in info.items()}
        by_name.update({a: a for a in info})
        out = {}
        for r in self.plan.replicas:
            address = by_name.get(r.placement.worker)
            if address is None:
                raise ReplicaStartError(
                    f"replica {r.id} is placed on worker {r.placement.worker!r}, "
                    f"which this cluster does not have (workers: "
                    f"{', '.join(sorted(by_name))}); compile against this cluster"
                )
            out[r.id] = address
        return out

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
        self._where = addresses
        record = self._record(addresses)
        save_record(record)
        client.sync(client.scheduler.sage_job_submit, record=record)
        plan_json = self.plan.to_json()
        self._started = _perf()
        futures = {
            rid: client.submit(
                ReplicaActor,
                plan_json,
                rid,
                self.job_id,
                actor=True,
                workers=[address],
                allow_other_workers=False,
                key=f"sage-{self.job_id}-{rid}",
                pure=False,
            )
            for rid, address in addresses.items()
        }
        self._futures = list(futures.values())
        try:
            for rid, fut in futures.items():
                try:
                    self._actors[rid] = fut.result(timeout=120)
                except Exception as exc:
                    raise ReplicaStartError(
                        f"replica {rid} could not start on {addresses[rid]}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
            client.sync(self._wire, addresses, {r: f.key for r, f in futures.items()})
        except BaseException as exc:
            self._status = "failed"
            self._error = exc
            self._finish_record()
            self._futures = []
            raise
        self._status = "running"
        client.loop.add_callback(self._supervise)
        return self

    async def _wire(self, addresses: dict[str, str], keys: dict[str, str]) -> None:
        targets = {rid: (addresses[rid], keys[rid]) for rid in addresses}
        for stage, call in (
            ("connect", lambda a: a.connect(targets)),
            ("open", lambda a: a.open()),
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
        runs = {asyncio.ensure_future(self._run_one(rid)): rid for rid in self._actors}
        pending = set(runs)
        next_poll = _perf() + POLL_S
        try:
            while pending:
                timeout = max(0.0, next_poll - _perf())
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for fut in done:
                    self._collect(runs[fut], fut)
                if self._error is not None and not self._stopping:
                    await self._stop(pending, runs)
                    break
                if _perf() >= next_poll:
                    next_poll = _perf() + POLL_S
                    lost = await self._poll()
                    if lost and not self._stopping:
                        hosted = sorted(
                            rid
                            for f, rid in runs.items()
                            if f in pending and self._worker_of(rid) in lost
                        )
                        self._fail(
                            WorkerLost(
                                f"worker(s) {', '.join(lost)} left the cluster while "
                                f"hosting replica(s) {', '.join(hosted) or '(finished)'}"
                                f" of job {self.job_id}; the job was stopped"
                            )
                        )
                        await self._stop(pending, runs)
                        break
        except Exception as exc:
            logger.exception("job master of %s failed", self.job_id)
            self._fail(exc)
        finally:
            await self._finish()

    def _worker_of(self, rid: str) -> str:
        return self._where.get(rid, "")

    def _collect(self, rid: str, fut: asyncio.Future[Any]) -> None:
        try:
            outcome = fut.result()
        except (OSError, RuntimeError) as exc:  # the actor's worker is gone
            self._fail(
                WorkerLost(
                    f"replica {rid} on worker {self._worker_of(rid)} stopped answering"
                    f" ({exc}); the worker left the cluster or crashed, so job "
                    f"{self.job_id} was stopped"
                )
            )
            return
        except BaseException as exc:  # noqa: BLE001 - the call itself failed
            self._fail(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            return
        self._outcomes[rid] = outcome
        self._live[rid] = outcome["metrics"]
        if outcome["status"] == "failed":
            self._fail(decode_failure(outcome["error"]))

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
        self._write_dead_letters()
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

    def _write_dead_letters(self) -> None:
        name = self.plan.settings.dead_letter_sink
        records = [r for o in self._outcomes.values() for r in o["dead_letters"]]
        if not name or not records:
            return
        import dataclasses

        from sage_core.functions import OperatorContext, SinkFunction
        from sage_core.graph.model import OperatorRef

        op = dataclasses.replace(
            self.plan.operators[-1],
            name="dead-letter",
            role="sink",
            ref=OperatorRef("plugin", name),
            config=dict(self.plan.settings.dead_letter_config),
            parallelism=1,
        )
        sink = build_function(op)
        assert isinstance(sink, SinkFunction)
        sink.open(
            OperatorContext("dead-letter", 0, 1, self.job_id, "client", op.config)
        )
        try:
            sink.sink_batch(
                [
                    {
                        **r,
                        "item": r["item"] if _jsonable(r["item"]) else repr(r["item"]),
                    }
                    for r in records
                ]
            )
        finally:
            sink.close()

    # -- JobHandle ---------------------------------------------------------------

    def cancel(self) -> None:
        if self._status == "running":
            self._status = "cancelled"
        if self._actors and not self._done.is_set():
            self.client.sync(self._cancel_all)

    def drain(self) -> None:
        """Sources stop emitting; the items in flight finish and the job ends with
        its results (``sage jobs stop --drain``)."""
        if self._actors and not self._done.is_set():
            self.client.sync(self._drain_all)

    async def _drain_all(self) -> None:
        calls = (_call(a, "drain") for a in self._actors.values())
        await asyncio.gather(*calls, return_exceptions=True)  # a lost one: supervised

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
        return {
            "operators": aggregate(replicas.values()) if replicas else {},
            "replicas": replicas,
        }

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
            traces=self._traces(),
        )


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _call(actor: Any, method: str) -> Any:
    """``await actor.method()``; a lost actor raises here, not at attribute access."""
    return await getattr(actor, method)()


def _jsonable(value: Any) -> bool:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class RecoveryUnsupported(SageError, ValueError):
    """A Dask job asked for checkpoints or restarts (local runtime only so far)."""


class DaskRuntime:
    """Runs ExecutionPlans as actors on the cluster of ``client``."""

    name = "dask"

    def __init__(self, client: Any) -> None:
        self.client = client

    def cluster_view(self) -> ClusterView:
        return cluster_view(self.client)

    def submit(
        self, plan: ExecutionPlan, *, job_id: str | None = None, priority: int = 0
    ) -> DaskJob:
        """Start ``plan`` (placed against this cluster); returns its handle.

        Raises:
            RecoveryUnsupported: the plan asks for checkpoints or restarts, which
                only the local runtime provides so far.
        """
        s = plan.settings
        per_op = any(op.options.get("restart") for op in plan.operators)
        if s.checkpoint_interval_s is not None or s.restart.strip() != "none" or per_op:
            raise RecoveryUnsupported(
                "checkpoints and restarts (checkpoint_interval_s, restart) run on "
                "the local runtime only so far; unset them for a Dask job or run "
                "it with LocalEnvironment / `sage run` without --address"
            )
        return DaskJob(self.client, plan, job_id=job_id, priority=priority).start()
