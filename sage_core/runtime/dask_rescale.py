"""In-place rescaling of a ``DaskJob`` (mixed into it; ``compiler.rescale`` says
which operators may change and how the plan changes).

Adding a replica, from the client's event loop: place it with the job's policy on
the cluster as it is now, create its actor there, have each downstream replica
accept it as a sender (its inbox grows by one sender's quota, so nobody's credit
shrinks), wire and open it, have each upstream replica route to it from its next
step (``ReplicaCore.rewire``), then start its ``run`` under the job's supervision.
Retiring one: each upstream replica stops routing to it and sends it end of
stream; it drains and ends like any replica, its outcome kept with the job's.
Every change goes to the job record (``rescales``) and the scheduler's board, so
placement of later jobs counts the new replica.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

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
from sage_core.observe.records import update_record
from sage_core.runtime.actor_calls import ReplicaStartError, call_actor
from sage_core.runtime.cluster_view import cluster_view_async
from sage_core.runtime.dask_actor import ReplicaActor
from sage_core.runtime.transport import quota

if TYPE_CHECKING:
    from sage_core.compiler.plan import ExecutionPlan


class DaskRescale:
    """``scale`` of a ``DaskJob`` (see the module docstring)."""

    client: Any
    plan: ExecutionPlan
    job_id: str
    _status: str
    _stopping: bool
    _actors: dict[str, Any]
    _futures: list[Any]
    _where: dict[str, str]
    _keys: dict[str, str]
    _token: str
    _attempt: int
    _indices: dict[str, int]
    _scale_lock: asyncio.Lock
    _rescales: list[dict[str, Any]]
    _runs: dict[Any, str]
    _pending: set[Any]
    _record: Any
    _run_one: Any

    def scale(self, operator: str, replicas: int) -> list[str]:
        """See ``JobHandle.scale``."""
        check_count(replicas)
        result: list[str] = self.client.sync(self._scale, operator, replicas)
        return result

    async def _scale(self, operator: str, replicas: int) -> list[str]:
        changed: list[str] = []
        async with self._scale_lock:
            while True:
                task, add = next_step(self.plan, operator, replicas)
                if not task:
                    break
                if self._status != "running" or self._stopping:
                    raise RescaleError(
                        f"job {self.job_id} is {self._status}, not running"
                    )
                now = len(self.plan.replicas_of(task))
                if add:
                    rid = await self._add(operator, task)
                else:
                    rid = await self._retire(operator)
                changed.append(rid)
                self._note(operator, now, len(self.plan.replicas_of(task)), rid)
        if changed:
            await self._publish()
        return changed

    async def _add(self, operator: str, task: str) -> str:
        client = self.client
        view = await cluster_view_async(client)
        plan, rid = grow(
            self.plan, operator, view, index=next_index(self.plan, task, self._indices)
        )
        worker = next(r.placement.worker for r in plan.replicas if r.id == rid)
        address = next(str(w.address) for w in view.workers if w.name == worker)
        key = f"sage-{self.job_id}-{rid}-{self._token}.{self._attempt}"
        fut = client.submit(
            ReplicaActor,
            plan.to_json(),
            rid,
            self.job_id,
            actor=True,
            workers=[address],
            allow_other_workers=False,
            key=key,
            pure=False,
        )
        credits: dict[str, int] = {}
        owes = fed_by(plan, rid)
        try:
            actor = await asyncio.wait_for(fut._result(), 120)
            for d, owed in owes.items():
                credits[d] = await call_actor(self._actors[d], "add_sender", rid, owed)
            targets = {d: (self._where[d], self._keys[d]) for d in credits}
            await call_actor(actor, "connect", targets, credits)
            await call_actor(actor, "open", None)
        except Exception as exc:
            for d in credits:  # they expect rid's end of stream: it never comes
                await call_actor(self._actors[d], "drop_sender", rid, owes[d])
            fut.release()
            raise ReplicaStartError(
                f"replica {rid} could not start on {address}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._actors[rid], self._where[rid], self._keys[rid] = actor, address, key
        self._futures.append(fut)
        senders = feeds(plan, rid)
        cap = next(r.queue_capacity for r in plan.replicas if r.id == rid)
        share = quota(cap, len(senders))
        for u, channels in senders.items():
            routed = await call_actor(
                self._actors[u], "add_target", rid, address, key, share, channels
            )
            if not routed:  # u already ended: it owes no end of stream
                await call_actor(actor, "drop_sender", u, len(channels))
        self.plan = plan
        run = asyncio.ensure_future(self._run_one(rid))
        self._runs[run] = rid
        self._pending.add(run)
        return rid

    async def _retire(self, operator: str) -> str:
        plan, rid = shrink(self.plan, operator)
        for u in feeds(self.plan, rid):
            # False: u ended, and its end of stream reached rid already
            await call_actor(self._actors[u], "retire_target", rid)
        self.plan = plan
        return rid

    def _note(self, operator: str, before: int, after: int, rid: str) -> None:
        placed = next((r for r in self.plan.replicas if r.id == rid), None)
        self._rescales.append(
            {
                "at": time.time(),
                "operator": operator,
                "from": before,
                "to": after,
                "added" if placed else "retired": rid,
                **({"placement": placed.placement.to_dict()} if placed else {}),
            }
        )

    async def _publish(self) -> None:
        """The job record and the scheduler's board follow the new plan."""
        record = self._record({r.id: self._where[r.id] for r in self.plan.replicas})
        await self.client.scheduler.sage_job_submit(record=record)
        update_record(
            self.job_id,
            plan=record["plan"],
            placement=record["placement"],
            rescales=list(self._rescales),
        )
