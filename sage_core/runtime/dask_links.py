"""How replica actors reach each other on the Dask runtime (mixed into
``ReplicaActor``).

``connect`` makes one outlet per downstream replica (``transport.py``): a
same-worker target gets a direct hand-off into its ``Inbox``; a remote one gets
packets over its direct link (``link.py``; ``link`` starts the receiving end and
names its address and token) or, with ``direct_links`` off or on workers whose
comm scheme has none, by Dask ``actor_execute`` calls to ``push``/``wait_credit``.
Either way a sender holds credits for at most its share of the receiver's queue.
"""

from __future__ import annotations

import time
from typing import Any

from sage_core.compiler.plan import ExecutionPlan
from sage_core.observe.metrics import ReplicaMetrics
from sage_core.runtime.link import LinkPool, LinkServer
from sage_core.runtime.outlets import MAX_CALLS, LocalOutlet, RemoteOutlet
from sage_core.runtime.transport import Inbox, decode, entered, quota
from sage_core.runtime.worker import ReplicaCore

_perf = time.perf_counter


def upstream_replicas(plan: ExecutionPlan, replica: str) -> list[str]:
    """Replica ids that send to ``replica`` (each once, plan order)."""
    task = next(r.task for r in plan.replicas if r.id == replica)
    out: list[str] = []
    for ch in plan.inputs_of(task):
        for src, dsts in ch.routes:
            if replica in dsts and src not in out:
                out.append(src)
    return out


class ActorLinks:
    """The wiring methods of a replica actor (see the module docstring)."""

    core: ReplicaCore
    metrics: ReplicaMetrics
    plan: ExecutionPlan
    replica: str
    worker: str
    inbox: Inbox | None
    outlets: list[Any]
    _links: LinkServer
    _pools: list[LinkPool]

    # -- wiring ----------------------------------------------------------------

    async def connect(
        self,
        targets: dict[str, tuple[str, str]],
        credits: dict[str, int] | None = None,
    ) -> str:
        """Make one outlet per downstream replica: ``targets`` maps replica id to
        (worker address, actor key). Same-worker targets get a direct queue hand-off.
        ``credits``: a remote target's quota for this replica where the plan's
        share is not it (a replica added while the job runs gets the receiver's).
        """
        self.outlets = []
        for rid in self.core.targets:
            address, key = targets[rid]
            quota_of = (credits or {}).get(rid)
            self.outlets.append(await self._outlet(rid, address, key, quota_of))
        outlets = self.outlets
        self.core.load_of = lambda slot: outlets[slot].depth()
        self.core.pressure_of = lambda slot: outlets[slot].pressure()
        return self.worker

    async def _outlet(
        self, rid: str, address: str, key: str, credits: int | None = None
    ) -> Any:
        """The outlet to replica ``rid`` (actor ``key`` on worker ``address``)."""
        from distributed import get_worker
        from distributed.protocol import to_serialize

        worker = get_worker()
        local = worker.state.actors.get(key) if address == self.worker else None
        if isinstance(local, ActorLinks) and local.inbox is not None:
            return LocalOutlet(self.replica, local.inbox)
        if credits is None:
            n_senders = len(upstream_replicas(self.plan, rid))
            cap = next(r.queue_capacity for r in self.plan.replicas if r.id == rid)
            credits = quota(cap, n_senders)
        rpc = worker.rpc(address)

        async def call(fn: str, *args: Any) -> Any:
            reply = await rpc.actor_execute(
                actor=key,
                function=fn,
                args=[to_serialize(a) for a in args],
                kwargs={},
            )
            if reply["status"] != "OK":
                raise reply["exception"]
            return reply["result"]

        link_address, token = (
            await call("link") if self.plan.settings.direct_links else (None, "")
        )
        if link_address is not None:
            pool = LinkPool(
                link_address, token, worker.security.get_connection_args("worker")
            )
            self._pools.append(pool)
            await pool.warm(MAX_CALLS)
            push, wait_credit = pool.push, pool.credit
        else:

            async def push(sender: str, seq: int, blob: bytes) -> Any:
                return await call("push", sender, seq, blob)

            async def wait_credit(sender: str) -> Any:
                return await call("wait_credit", sender)

        return RemoteOutlet(
            self.replica,
            rid,
            push,
            wait_credit,
            credits=credits,
            link=link_address is not None,
        )

    # -- in-place rescaling (``compiler.rescale``) -------------------------------

    async def add_sender(self, sender: str, channels: int) -> int:
        """Accept packets from ``sender``, a replica added while the job runs, and
        its ``channels`` end-of-stream markers; returns its credits here."""
        assert self.inbox is not None, "a source replica has no input"
        granted = self.inbox.add_sender(sender)
        self.metrics.queue = self.inbox.queue
        self.core.expected_eos += channels
        return granted

    async def drop_sender(self, sender: str, channels: int) -> None:
        """``sender`` will send no end of stream here after all (it ended before
        it could route here, or it never started)."""
        self.core.expected_eos -= channels
        if self.inbox is not None:
            self.inbox.wake()

    async def add_target(
        self, rid: str, address: str, key: str, credits: int, channels: set[str]
    ) -> bool:
        """Route ``channels`` to ``rid`` too, from this replica's next step; False
        when this replica already ended (it sends ``rid`` nothing)."""
        outlet = await self._outlet(rid, address, key, credits)
        outlets, core = self.outlets, self.core

        def change() -> list[tuple[int, Any]]:
            outlets.append(outlet)
            core.add_target(rid, channels)
            return []

        return self._rewire(change)

    async def retire_target(self, rid: str) -> bool:
        """Stop routing to ``rid`` and send it end of stream, from the next step;
        False when this replica already ended (and sent it end of stream)."""
        core = self.core
        return self._rewire(lambda: core.retire_target(rid))

    def _rewire(self, change: Any) -> bool:
        if not self.core.rewire(change):
            return False
        if self.inbox is not None:
            self.inbox.wake()
        return True

    # -- receiving -------------------------------------------------------------

    async def link(self) -> tuple[str | None, str]:
        """The address and token of this replica's direct link (started now if
        needed); ``(None, "")`` where senders must use actor calls."""
        if self.inbox is None:
            return None, ""
        from distributed import get_worker

        address = await self._links.start(get_worker())
        return address, self._links.token

    async def push(self, sender: str, seq: int, blob: bytes) -> int:
        """Blob number ``seq`` of a remote sender's packets (enqueued in sequence
        order); returns credits given back."""
        assert self.inbox is not None, "a source replica has no input"
        now = _perf()
        packets = [entered(p, now) for p in decode(blob)]
        self.inbox.accept_in_order(sender, seq, packets)
        return self.inbox.take_owed(sender)

    async def wait_credit(self, sender: str) -> int:
        assert self.inbox is not None
        return await self.inbox.wait_credit(sender)

    def _close_links(self) -> None:
        for pool in self._pools:
            pool.close()
        self._links.close()
