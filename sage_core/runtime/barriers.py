"""Checkpoint barriers on the replica side: alignment, snapshot and restore.

A source replica handles barrier ``n`` between two micro-batches when its job asks
for it (``ReplicaCore.barrier_request``). Any replica handling barrier ``n``
processes what it holds, snapshots its operators (``snapshot``), acknowledges the
serialised snapshot (``ReplicaCore.on_snapshot``) and sends ``Barrier(n)`` to every
downstream replica, after the packets it emitted before.

A replica with several upstream senders aligns (``Aligner``): once barrier ``n``
came from a sender, further packets from that sender are buffered until the barrier
came from every sender still running (an end-of-stream counts as one), so the
snapshot holds exactly the effect of the items before the barrier. Other senders
keep flowing; only the aligned senders' packets wait.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from sage_core import plugins
from sage_core.checkpoint.keyed import restore_groups, snapshot_groups
from sage_core.checkpoint.storage import CheckpointMismatch, dumps
from sage_core.routing import Candidate
from sage_core.runtime.join import JoinExecutor

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from sage_core.runtime.worker import Outbound, ReplicaCore

_perf = time.perf_counter


class Barrier:
    """Checkpoint barrier ``epoch`` from upstream replica ``sender``."""

    __slots__ = ("epoch", "sender")

    def __init__(self, epoch: int, sender: str) -> None:
        self.epoch, self.sender = epoch, sender

    def __repr__(self) -> str:
        return f"Barrier({self.epoch}, {self.sender!r})"


def _sender(p: Any) -> str:
    return p[4] if type(p) is tuple else p.sender


class Aligner:
    """Aligns barriers of one replica's upstream senders (see the module doc)."""

    def __init__(self, core: ReplicaCore, senders: set[str]) -> None:
        self.core = core
        self.running = set(senders)
        self.epoch: int | None = None
        self.arrived: set[str] = set()
        self.held: list[Any] = []

    def handle(self, packets: list[Any]) -> Outbound:
        core = self.core
        if self.epoch is None and all(type(p) is tuple for p in packets):
            return core.process(packets)  # no barrier, no end of stream: as is
        out: Outbound = []
        segment: list[Any] = []
        todo = deque(packets)
        while todo:
            p = todo.popleft()
            sender = _sender(p)
            if self.epoch is not None and sender in self.arrived:
                self.held.append(p)
                continue
            if type(p) is Barrier:
                if segment:
                    out += core.process(segment)
                    segment = []
                self.epoch = p.epoch
                self.arrived.add(sender)
            else:
                segment.append(p)
                if type(p) is not tuple:  # end of stream: no barrier will come
                    self.running.discard(sender)
            if self.epoch is not None and self.arrived >= self.running:
                if segment:
                    out += core.process(segment)
                    segment = []
                out += checkpoint(core, self.epoch)
                todo.extendleft(reversed(self.held))
                self.epoch, self.arrived, self.held = None, set(), []
        if segment:
            out += core.process(segment)
        return out


def checkpoint(core: ReplicaCore, epoch: int) -> Outbound:
    """Handle barrier ``epoch`` on ``core``: flush, snapshot, ack, forward."""
    out = core._flush_pending(_perf()) if core.pending else []
    core.epoch = epoch
    t0 = _perf()
    blob = dumps(snapshot(core, epoch))
    core.metrics_checkpoint_s += _perf() - t0
    assert core.on_snapshot is not None
    core.on_snapshot(epoch, core.replica, blob)
    out.extend(
        (slot, Barrier(epoch, core.replica)) for slot in range(len(core.targets))
    )
    return out


def final_snapshot(core: ReplicaCore) -> bytes:
    """The snapshot of a replica that has finished (every later checkpoint uses it)."""
    return dumps(snapshot(core, core.epoch + 1, finished=True))


def snapshot(
    core: ReplicaCore, epoch: int, *, finished: bool = False
) -> dict[str, Any]:
    """What checkpoint ``epoch`` stores for ``core``'s replica."""
    rp = core.plan_replica
    ops: dict[str, Any] = {}
    joins = {ex.name: ex for ex in core.executors if isinstance(ex, JoinExecutor)}
    for op, fn, ctx in zip(core.ops, core.functions, core.contexts, strict=True):
        entry: dict[str, Any] = {}
        state = fn.snapshot_state(epoch)
        if state is not None:
            entry["state"] = state
        if ctx.keyed_state:
            entry["keyed"] = snapshot_groups(ctx.keyed_state)
        if op.name in joins:
            entry["join"] = joins[op.name].get_state()
        ops[op.name] = entry
    return {
        "replica": core.replica,
        "task": rp.task,
        "index": rp.index,
        "parallelism": len(core.plan.replicas_of(rp.task)),
        "offset": core._produced if core.is_source else None,
        "finished": finished,
        "ops": ops,
    }


def _owner(core: ReplicaCore) -> Callable[[Any], bool] | None:
    """Whether a key is routed to ``core``'s replica by its keyed input channel."""
    for ch in core.plan.inputs_of(core.plan_replica.task):
        if ch.key is None or not ch.routes:
            continue
        dsts = list(ch.routes[0][1])
        if len(dsts) == 1:
            return None
        router = plugins.get("router", ch.router, scope="dataflow")(
            **dict(ch.router_config)
        )
        return _KeyOwner(router, dsts, core.replica)
    return None


class _KeyOwner:
    """``owns(key)``: whether ``router`` sends ``key`` to replica ``me``."""

    def __init__(self, router: Any, dsts: list[str], me: str) -> None:
        self.router, self.dsts, self.me = router, dsts, me
        self.cands = tuple(Candidate(i, d) for i, d in enumerate(dsts))

    def __call__(self, key: Any) -> bool:
        parts = self.router.partition([key], [key], self.cands)
        return any(p and self.dsts[i] == self.me for i, p in enumerate(parts))


def restore(core: ReplicaCore, snaps: Mapping[str, Mapping[str, Any]]) -> None:
    """Load ``core``'s part of a checkpoint (every replica's snapshot by replica id)
    before ``open()``. Operators are matched by name, so chaining may differ.

    Raises:
        CheckpointMismatch: the checkpoint lacks one of this replica's operators, or
            holds its non-keyed state (or source offset) at another parallelism.
    """
    rp = core.plan_replica
    owns = _owner(core)
    joins = {ex.name: ex for ex in core.executors if isinstance(ex, JoinExecutor)}
    for op, fn, ctx in zip(core.ops, core.functions, core.contexts, strict=True):
        peers = [s for s in snaps.values() if op.name in s["ops"]]
        if not peers:
            raise CheckpointMismatch(
                f"the checkpoint has no operator {op.name!r}; resume a job with the "
                f"same operators"
            )
        for peer in peers:
            if "keyed" in peer["ops"][op.name]:
                restore_groups(ctx.keyed_state, peer["ops"][op.name]["keyed"], owns)
        stateful = any(
            "state" in p["ops"][op.name] or "join" in p["ops"][op.name] for p in peers
        )
        if not stateful and not (core.is_source and op is core.ops[0]):
            continue
        mine = [p for p in peers if p["index"] == rp.index]
        if peers[0]["parallelism"] != op.parallelism or len(mine) != 1:
            raise CheckpointMismatch(
                f"operator {op.name!r} has non-keyed state or a source offset "
                f"checkpointed at parallelism {peers[0]['parallelism']}, now "
                f"{op.parallelism}; resume with the same parallelism, or keep its "
                f"state in context.keyed_state"
            )
        entry = mine[0]["ops"][op.name]
        if "state" in entry:
            fn.restore_state(entry["state"])
        if "join" in entry:
            joins[op.name].restore_state(entry["join"])
        if core.is_source and op is core.ops[0]:
            core.source_offset = int(mine[0]["offset"])
