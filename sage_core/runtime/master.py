"""DaskRuntime and its job master: a plan's replicas as actors on a Dask cluster.

``DaskRuntime(client).submit(plan)`` creates one ``ReplicaActor`` per replica on the
worker its placement chose (``workers=[address]``, never elsewhere), wires every
replica to its downstream replicas (``connect``), opens them all (a barrier: nothing
moves before every operator is open), then starts each replica's ``run`` call. The
master (``DaskJob``) runs on the client's event loop: it collects each replica's
outcome, polls live metrics about once a second, posts them to the scheduler's
``sage-jobs`` board and stops the attempt at the first replica failure or when a
worker hosting one of its replicas leaves the cluster; it then restarts the job from
its last committed checkpoint on the surviving workers, or fails it with an error
naming the replica and cause (``supervise.py``). With ``checkpoint_interval_s`` the
master's coordinator takes aligned checkpoints (``dask_checkpoint.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any

from sage_core.compiler.placement import ClusterView
from sage_core.compiler.plan import ExecutionPlan
from sage_core.observe.metrics import aggregate
from sage_core.observe.records import save_record
from sage_core.runtime.actor_calls import ReplicaStartError, addresses_of, call_actor
from sage_core.runtime.cluster_view import (
    cluster_view,
    replica_demand,
)
from sage_core.runtime.dask_actor import ReplicaActor
from sage_core.runtime.dask_checkpoint import MasterCheckpoints
from sage_core.runtime.dask_rescale import DaskRescale
from sage_core.runtime.job import JobFailed, JobHandle, JobResult
from sage_core.runtime.recovery import JobRecovery
from sage_core.runtime.scheduler_ext import install_on
from sage_core.runtime.supervise import Supervision, WorkerLost

__all__ = ["DaskJob", "DaskRuntime", "ReplicaStartError", "WorkerLost"]

logger = logging.getLogger(__name__)
_perf = time.perf_counter


class DaskJob(DaskRescale, Supervision, JobHandle):
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
        self._next_metrics = _perf() + plan.settings.metrics_interval_s
        self._actors: dict[str, Any] = {}
        self._futures: list[Any] = []
        self._started = self._ended = 0.0
        self._where: dict[str, str] = {}
        self._stopping = False
        self._attempt = 0
        self._token = uuid.uuid4().hex[:6]  # actor keys differ from a resumed run's
        self._checkpoints: MasterCheckpoints | None = None
        self._lost: set[str] = set()
        self._failures: list[BaseException] = []
        self._last_cause: BaseException | None = None
        self._history: list[dict[str, Any]] = []
        self._keys: dict[str, str] = {}
        self._runs: dict[Any, str] = {}
        self._pending: set[Any] = set()
        self._indices: dict[str, int] = {}
        self._rescales: list[dict[str, Any]] = []
        self._scale_lock = asyncio.Lock()

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
        """Register the job (``register``), then create, wire and open every
        replica and start them (``launch``).

        Raises:
            ReplicaStartError: an actor failed to start or open (named, with cause).
        """
        return self.register().launch()

    def register(self) -> DaskJob:
        """Write the job record and post the job to the scheduler's board: from
        now on placement of other jobs counts this one's replicas as resident
        (``cluster_view``)."""
        client = self.client
        client.run_on_scheduler(install_on)
        self._where = self._addresses()
        record = self._record(self._where)
        save_record(record)
        client.sync(client.scheduler.sage_job_submit, record=record)
        return self

    def launch(self) -> DaskJob:
        """Create, wire and open every replica of a registered job, then start them.

        Raises:
            ReplicaStartError: an actor failed to start or open (named, with cause).
        """
        client, addresses = self.client, self._where
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
                key=f"sage-{self.job_id}-{rid}-{self._token}.{self._attempt}",
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
        self._keys = {r: f.key for r, f in futures.items()}
        await self._wire(addresses, self._keys, where)
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
        calls = (call_actor(a, "drain") for a in self._actors.values())
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
        out: dict[str, Any] = {
            "operators": aggregate(replicas.values()) if replicas else {},
            "replicas": replicas,
        }
        stats = self._checkpoint_stats()
        if stats is not None:
            out["checkpoints"] = stats
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
            traces=self._traces(),
        )


def _replicas_with(plan: ExecutionPlan, role: str, at: int) -> list[str]:
    """Replicas whose chain has a ``role`` operator at position ``at``."""
    return [
        r.id
        for r in plan.replicas
        if plan.operator(plan.task(r.task).operators[at]).role == role
    ]


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
