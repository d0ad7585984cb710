"""Checkpoints on the Dask runtime: the replica actor's side and the master's.

Actor side (``ActorCheckpoints``, mixed into ``ReplicaActor``): the master asks a
source actor for barrier ``n`` (``barrier``); its loop injects it between two
micro-batches, and barriers then flow with the packets through the same outlets as
the items (same worker or across workers), are aligned by ``barriers.Aligner`` and
snapshotted by ``barriers.checkpoint`` exactly as on the local runtime. Snapshots
wait in the actor until the master collects them (``acks``, a long poll). A
restored attempt loads its part of a committed checkpoint from the checkpoint
store (``checkpoint_dir`` must be reachable from every worker) before opening.
A transactional sink that finished keeps its output staged until the master
``finalize``s it when the whole job succeeded.

Master side (``MasterCheckpoints``): drives one attempt's ``CheckpointCoordinator``
from the client's event loop: barrier requests and commits go to the actors,
collected snapshots and final snapshots come back to the coordinator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sage_core.checkpoint.storage import CheckpointStore
from sage_core.functions import FINAL_EPOCH, SinkFunction
from sage_core.runtime.barriers import final_snapshot, restore

if TYPE_CHECKING:
    from sage_core.checkpoint.coordinator import CheckpointCoordinator
    from sage_core.runtime.recovery import JobRecovery
    from sage_core.runtime.worker import ReplicaCore

logger = logging.getLogger(__name__)

#: seconds an ``acks`` long poll waits before answering with nothing
ACK_POLL_S = 1.0


class ActorCheckpoints:
    """The checkpoint methods of a replica actor (see the module docstring)."""

    core: ReplicaCore
    job_id: str
    replica: str

    def _init_checkpoints(self) -> None:
        self.checkpointing = self.core.plan.settings.checkpoint_interval_s is not None
        self._acks: list[tuple[int, bytes]] = []
        self._ack_wake: asyncio.Event | None = None
        self._ack_loop: asyncio.AbstractEventLoop | None = None
        self._ended = False
        self._deferred = False
        self.core.on_snapshot = self._on_snapshot

    def _on_snapshot(self, epoch: int, replica: str, blob: bytes) -> None:
        # runs on the event loop or on the replica's own thread
        self._acks.append((epoch, blob))
        loop = self._ack_loop
        if loop is not None and self._ack_wake is not None:
            loop.call_soon_threadsafe(self._ack_wake.set)

    def _restore(self, where: tuple[str, int, int] | None) -> None:
        """Load this replica's part of checkpoint ``(url, retained, epoch)``."""
        if where is None:
            return
        url, retained, epoch = where
        store = CheckpointStore(url, self.job_id, retained=retained)
        cp = store.open(epoch)
        restore(self.core, {r: store.load(cp, r) for r in cp.replicas})
        self.core.epoch = epoch

    def _bind_acks(self) -> None:
        self._ack_loop = asyncio.get_running_loop()
        self._ack_wake = asyncio.Event()

    def _end_checkpoints(self, succeeded: bool) -> bytes | None:
        """At the end of ``run``: the final snapshot of a replica that finished (a
        transactional sink then stays open until ``finalize``)."""
        self._ended = True
        if self._ack_wake is not None:
            self._ack_wake.set()
        if not (self.checkpointing and succeeded):
            return None
        self._deferred = self.core.is_sink
        return final_snapshot(self.core)

    async def acks(self) -> list[tuple[int, bytes]] | None:
        """Snapshots ``(epoch, blob)`` taken since the last call; waits up to
        ``ACK_POLL_S`` for one. None once the replica stopped and all were taken."""
        wake = self._ack_wake
        if not self._acks and not self._ended and wake is not None:
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), ACK_POLL_S)
            except asyncio.TimeoutError:
                pass
        out, self._acks = self._acks, []
        return out if out or not self._ended else None

    async def barrier(self, epoch: int) -> None:
        """Inject barrier ``epoch`` (a source replica) before its next micro-batch."""
        self.core.barrier_request = max(self.core.barrier_request, epoch)

    def _sinks(self) -> list[SinkFunction]:
        return [f for f in self.core.functions if isinstance(f, SinkFunction)]

    async def commit(self, epoch: int) -> None:
        """Checkpoint ``epoch`` is durable: publish the sinks' output sealed up to it."""
        sinks = self._sinks()
        if sinks:
            loop = asyncio.get_running_loop()
            for fn in sinks:
                await loop.run_in_executor(None, fn.commit, epoch)

    async def finalize(self, commit: bool) -> None:
        """Close a finished transactional sink; first publish all its remaining
        output when ``commit`` (the job succeeded)."""
        if not self._deferred:
            return
        self._deferred = False
        if commit:
            await self.commit(FINAL_EPOCH)
        self.core.close()


class MasterCheckpoints:
    """One attempt's checkpoints, driven from the client's event loop.

    Args:
        recovery: the job's checkpoints and restarts.
        actors: the attempt's replica actors by replica id.
        sources: ids of the source replicas.
        sinks: ids of the replicas ending in a sink.
        loop: the client's event loop (the coordinator's thread posts to it).
    """

    def __init__(
        self,
        recovery: JobRecovery,
        actors: Mapping[str, Any],
        sources: list[str],
        sinks: list[str],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.recovery = recovery
        self.actors, self.loop = dict(actors), loop
        self.sources, self.sinks = sources, sinks
        self._pumps: list[asyncio.Future[Any]] = []
        self.coordinator: CheckpointCoordinator | None = recovery.coordinate(
            self.actors, self._trigger, self._commit
        )

    def start(self) -> None:
        if self.coordinator is None:
            return
        self._pumps = [
            asyncio.ensure_future(self._pump(rid, a)) for rid, a in self.actors.items()
        ]
        self.coordinator.start()

    def finished(self, replica: str, blob: bytes | None) -> None:
        if self.coordinator is not None and blob is not None:
            self.coordinator.finished(replica, blob)

    async def stop(self) -> None:
        """Stop triggering (a commit under way finishes first, off the loop)."""
        for p in self._pumps:
            p.cancel()
        if self.coordinator is not None:
            await self.loop.run_in_executor(None, self.recovery.stop)
            self.coordinator = None

    async def _pump(self, rid: str, actor: Any) -> None:
        coordinator = self.coordinator
        assert coordinator is not None
        while True:
            try:
                acks = await actor.acks()
            except Exception:  # noqa: BLE001 - a gone actor: its run call reports it
                return
            if acks is None:
                return
            for epoch, blob in acks:
                coordinator.ack(epoch, rid, blob)

    def _post(self, make: Callable[[], Any]) -> None:
        async def call() -> None:
            try:
                await make()
            except Exception as exc:  # noqa: BLE001 - the run calls report failures
                logger.debug("checkpoint call failed: %r", exc)

        asyncio.run_coroutine_threadsafe(call(), self.loop)

    def _trigger(self, epoch: int) -> None:
        async def all_sources() -> None:
            await asyncio.gather(*(self.actors[r].barrier(epoch) for r in self.sources))

        self._post(all_sources)

    def _commit(self, epoch: int) -> None:
        async def all_actors() -> None:
            await asyncio.gather(*(self.actors[r].commit(epoch) for r in self.sinks))

        self._post(all_actors)
