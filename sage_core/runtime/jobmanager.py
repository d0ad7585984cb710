"""The job manager inside the scheduler: jobs that outlive the client submitting them.

A client sends a pipeline spec (``sage_manager_submit``); the manager compiles it
against the cluster and runs it with :class:`~sage_core.runtime.master.DaskRuntime`
from a thread of the *scheduler* process, through its own client of that scheduler,
so the job goes on when the submitter exits. Each job keeps its name, owner (a free
label), priority, policy, status (``queued``, ``starting``, ``running``,
``succeeded``, ``failed``, ``cancelled``, ``drained``, ``lost``), timestamps, error and
a log of what happened to it. The table is kept on disk (:mod:`.jobstore`): after a
scheduler restart the jobs that were queued or running are reported ``lost``.
``stop(job, drain=True)`` lets the sources stop and what is in flight reach the sinks.
``install(scheduler, board)`` adds the handlers ``sage_manager_submit``,
``sage_manager_jobs``, ``sage_manager_job``, ``sage_manager_stop`` and
``sage_manager_logs``; the ``sage-jobs`` scheduler plugin calls it, so ``sage
scheduler`` and ``dask scheduler --preload sage_core.runtime.preload`` both have it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sage_core.common.errors import SageError
from sage_core.compiler.rescale import RescaleError
from sage_core.runtime.admission import (
    PUMP_S,
    AdmissionDecision,
    AdmissionPolicy,
    AdmissionQueue,
    JobView,
    create_admission_policy,
)
from sage_core.runtime.jobstore import JobStore, ManagedJob

logger = logging.getLogger(__name__)


class UnknownJob(SageError, KeyError):
    """No job of the manager has this id (or id prefix)."""

    def __str__(self) -> str:
        return str(self.args[0])


class JobManager:
    """Runs submitted specs on the cluster of the scheduler at ``address``."""

    def __init__(
        self,
        address: str,
        *,
        board: Any = None,
        security: Any = None,
        admission: AdmissionPolicy | None = None,
        utilisation: Callable[[], float | None] = lambda: None,
        store: JobStore | None = None,
    ) -> None:
        self.address, self.board, self.security = address, board, security
        self.jobs: dict[str, ManagedJob] = {}
        self.store = store or JobStore()
        for record in self.store.load():  # jobs of an earlier scheduler
            job = ManagedJob.from_record(record)
            self.jobs[job.id] = job
            if board is not None:
                board.submit({**job.summary(), "plan": None})
        # the job table's lock is taken by handlers on the scheduler's event loop:
        # never hold it while waiting on that loop (connecting a client does)
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._placing = threading.Lock()  # compile + register, one job at a time
        self._shared: Any = None
        self.queue = AdmissionQueue(admission or _configured_policy(), utilisation)
        self._closed = threading.Event()
        threading.Thread(target=self._pump, name="sage-admission", daemon=True).start()

    def _pump(self) -> None:
        while not self._closed.wait(PUMP_S):
            self.queue.pump()

    def set_admission(
        self, name: str | None = None, options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Switch the cluster's admission policy (None: keep it); the current one."""
        if name is not None:
            self.queue.policy = create_admission_policy(name, **dict(options or {}))
        policy = self.queue.policy
        return {"policy": policy.name, "options": policy.options()}

    def submit(
        self,
        spec: Mapping[str, Any] | str,
        *,
        base_dir: str | None = None,
        owner: str = "",
        priority: int = 0,
        policy: str | None = None,
    ) -> dict[str, Any]:
        """Check ``spec`` (a mapping or its JSON text) and start it as a job; returns
        the job's summary.

        Raises:
            SpecError: the spec's structure is wrong (every problem listed).
        """
        from sage_core.graph import load_spec

        data = json.loads(spec) if isinstance(spec, str) else dict(spec)
        loaded = load_spec(data, base_dir=base_dir)
        name = loaded.graph.name
        job = ManagedJob(
            id=f"{name}-{uuid.uuid4().hex[:8]}",
            name=name,
            owner=owner,
            priority=int(priority),
            policy=policy,
            spec=data,
            base_dir=base_dir,
        )
        job.log(f"submitted by {owner or 'anonymous'} (priority {priority})")
        with self._lock:
            self.jobs[job.id] = job
        self.store.save(job.record())

        def start() -> None:
            job.status, job.started = "starting", time.time()
            self.store.save(job.record())
            threading.Thread(
                target=self._run, args=(job, loaded), name=f"sage-job-{job.id}",
                daemon=True,
            ).start()  # fmt: skip

        def record(decision: AdmissionDecision) -> None:
            job.admission.append(decision.to_dict())
            job.log(
                f"{'admitted' if decision.admitted else 'queued'}: {decision.reason}"
            )
            self.store.save(job.record())

        view = JobView(job.id, owner, job.priority, job.submitted)
        self.queue.add(view, start, record)
        return job.summary()

    def _run(self, job: ManagedJob, loaded: Any) -> None:
        from sage_core.compiler import compile_plan
        from sage_core.compiler.plan import RuntimeSettings
        from sage_core.runtime.cluster_view import cluster_view
        from sage_core.runtime.master import DaskJob

        try:
            client = self._client()
            settings = RuntimeSettings.from_mapping(
                {k: v for k, v in loaded.settings.items() if k != "parallelism"}
            )
            # jobs admitted together are placed one after the other: each sees the
            # replicas of those placed before it (the board has them once the
            # job is registered), not an empty cluster
            with self._placing:
                plan = compile_plan(
                    loaded.graph,
                    cluster_view(client),
                    job.policy or "load-aware-spread",
                    settings=settings,
                )
                handle = DaskJob(client, plan, job_id=job.id, priority=job.priority)
                handle.register()
            workers = sorted({r.placement.worker for r in plan.replicas})
            job.log(f"placed {len(plan.replicas)} replicas on {', '.join(workers)}")
            handle.launch()
            job.handle = handle
            self._label(job)
            job.status = "running"
            job.log("running")
            self.store.save(job.record())
            if job.stop_requested:
                handle.cancel()
            elif job.drain_requested:
                handle.drain()
            result = handle.wait()
            job.items = sum(
                int(op.get("items_in", 0))
                for name, op in result.metrics.get("operators", {}).items()
                if name in _sinks(plan)
            )
            job.status = "cancelled" if job.stop_requested else result.status
            if job.drain_requested and job.status == "succeeded":
                job.status = "drained"
            job.log(f"{job.status}: {job.items} items into sinks")
        except Exception as exc:  # noqa: BLE001 - the job's error, kept and shown
            job.status = "cancelled" if job.stop_requested else "failed"
            job.error = f"{type(exc).__name__}: {exc}"
            job.log(f"{job.status}: {job.error}")
        finally:
            job.ended = time.time()
            self.queue.ended(job.id)
            self._label(job)
            self.store.save(job.record())

    def _client(self) -> Any:
        """The manager's client of its own scheduler, shared by its jobs (the actor
        handles of a job bind to the process's default client, so there is one)."""
        from distributed import Client

        with self._client_lock:
            if self._shared is None:
                self._shared = Client(self.address, security=self.security, timeout=60)
            return self._shared

    def close(self) -> None:
        """Close the shared client (the scheduler is closing)."""
        self._closed.set()
        with self._client_lock:
            shared, self._shared = self._shared, None
        if shared is not None:
            shared.close()

    def _label(self, job: ManagedJob) -> None:
        """Owner and manager flag on the board's record (the /sage page shows them)."""
        record = self.board.jobs.get(job.id) if self.board is not None else None
        if record is not None:
            record["owner"] = job.owner
            record["admission"] = list(job.admission)
            if job.ended is not None:
                record["status"] = job.status

    def find(self, job_id: str) -> ManagedJob:
        """The job with this id, or the only one whose id starts with it.

        Raises:
            UnknownJob: none (or several) match.
        """
        with self._lock:
            if job_id in self.jobs:
                return self.jobs[job_id]
            hits = [j for k, j in self.jobs.items() if k.startswith(job_id)]
        if len(hits) != 1:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise UnknownJob(
                f"no job {job_id!r} on this scheduler"
                + (" (ambiguous prefix)" if hits else "")
                + f"; jobs: {known}"
            )
        return hits[0]

    def summaries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [j.summary() for j in self.jobs.values()]

    def stop(self, job_id: str, drain: bool = False) -> dict[str, Any]:
        """Cancel the job (its replicas stop promptly), or with ``drain`` let its
        sources stop and what is in flight reach the sinks (it ends ``drained``,
        with its results); returns its summary."""
        job = self.find(job_id)
        if job.status == "queued" and self.queue.remove(job.id):
            job.status, job.ended = "cancelled", time.time()
            job.log("cancelled while queued")
            self.store.save(job.record())
        elif drain and job.status in ("starting", "running"):
            job.drain_requested = True
            job.log("drain requested: sources stop, items in flight finish")
            if job.handle is not None:
                threading.Thread(target=job.handle.drain, daemon=True).start()
        elif job.status in ("starting", "running"):
            job.stop_requested = True
            job.log("stop requested")
            if job.handle is not None:
                threading.Thread(target=job.handle.cancel, daemon=True).start()
        return job.summary()

    def logs(self, job_id: str) -> list[str]:
        return list(self.find(job_id).logs)

    def scale(self, job_id: str, operator: str, replicas: int) -> dict[str, Any]:
        """Change ``operator``'s replicas in place (``JobHandle.scale``); the
        replicas added or retired, logged with the job.

        Raises:
            RescaleError: the job is not running, or the operator cannot change.
        """
        job = self.find(job_id)
        if job.status != "running" or job.handle is None:
            raise RescaleError(f"job {job.id} is {job.status}, not running")
        changed = job.handle.scale(operator, replicas)
        if changed:
            job.log(f"{operator} scaled to {replicas} replicas: {', '.join(changed)}")
            self.store.save(job.record())
        return {"job": job.id, "operator": operator, "replicas": replicas,
                "changed": changed}  # fmt: skip


def _sinks(plan: Any) -> set[str]:
    return {op.name for op in plan.operators if op.role == "sink"}


def _configured_policy() -> AdmissionPolicy:
    """The policy Dask's config names (``sage.admission.policy`` / ``.options``, e.g.
    ``DASK_SAGE__ADMISSION__POLICY=staggered``); ``immediate`` by default."""
    import dask

    name = dask.config.get("sage.admission.policy", "immediate")
    options = dask.config.get("sage.admission.options", {}) or {}
    return create_admission_policy(str(name), **dict(options))


def worker_utilisation(scheduler: Any) -> float | None:
    """The workers' mean CPU use (0..1, per thread), from their heartbeats."""
    shares = []
    for ws in list(scheduler.workers.values()):
        cpu = ws.metrics.get("cpu")
        if cpu is not None:
            shares.append(min(1.0, float(cpu) / (100.0 * max(1, ws.nthreads))))
    return sum(shares) / len(shares) if shares else None


def install(scheduler: Any, board: Any) -> JobManager:
    """Add the manager's handlers to ``scheduler`` (returns the manager)."""
    manager = JobManager(
        scheduler.address,
        board=board,
        security=getattr(scheduler, "security", None),
        utilisation=lambda: worker_utilisation(scheduler),
    )
    scheduler.handlers.update(
        {
            "sage_manager_submit": _remote(manager.submit),
            "sage_manager_jobs": lambda: manager.summaries(),
            "sage_manager_job": _remote(lambda job: manager.find(job).summary()),
            "sage_manager_stop": _remote(
                lambda job, drain=False: manager.stop(job, drain)
            ),
            "sage_manager_logs": _remote(lambda job: manager.logs(job)),
            "sage_manager_admission": _remote(manager.set_admission),
            # off the scheduler's event loop: a rescale asks the scheduler for the
            # cluster's state and creates actors through it
            "sage_manager_scale": _remote_in_thread(manager.scale),
        }
    )
    return manager


def _remote_in_thread(fn: Any) -> Any:
    """``_remote`` for a call that must not block the scheduler's event loop."""
    call = _remote(fn)

    async def handler(**kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(call, **kwargs)

    return handler


def _remote(fn: Any) -> Any:
    """A handler returning ``{"ok": value}`` or ``{"error": message}``: SAGE errors
    reach the client as their message (exceptions do not cross as such)."""

    def handler(**kwargs: Any) -> dict[str, Any]:
        try:
            return {"ok": fn(**kwargs)}
        except SageError as exc:
            return {"error": str(exc), "type": type(exc).__name__}

    return handler
