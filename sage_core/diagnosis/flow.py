"""How packets move between the simulator's replicas (``sim.Simulator``, whose
docstring tells the model): outputs cut into packets and routed, pushed into
bounded queues against each sender's credit, taken by steps, and the credit going
back when the runtime gives it back."""

from __future__ import annotations

import functools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sage_core.compiler.settings import LoopSteps

#: the share of a cross-worker packet's CPU its sender pays; its receiver pays the
#: rest, with the step that takes it in
SEND_SHARE = 0.5
#: passes of a busy event loop before it has read a message from another worker
#: (a packet, a credit reply): the socket's data, the link's reader, the handler.
#: The traces' transit into a worker running 4.8 ms steps is 14.6-15.1 ms
LOOP_PASSES = 3

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_core.diagnosis.model import ChannelModel, JobModel, TaskModel
    from sage_core.diagnosis.servers import Server


@dataclass(slots=True)
class Replica:
    """One replica in a simulated run: its queue, credit and step state, and what
    it did (accounting)."""

    rid: str
    task: TaskModel
    worker: str
    capacity: int
    run_on: str = ""
    #: packets (the emission times of their items) with when each was enqueued
    #: and the replica that sent it
    queue: deque[tuple[float, list[float], str]] = field(default_factory=deque)
    #: Dask: credits of each sender (``quota``; 0: its senders share ``capacity``)
    #: and the packets each sent that still hold one
    quota: int = 0
    owed: dict[str, int] = field(default_factory=dict)
    busy: bool = False
    blocked_on: str | None = None
    out: deque[tuple[str, list[float]]] = field(default_factory=deque)
    pending: list[float] = field(default_factory=list)
    pending_since: float = -1.0
    timer: bool = False
    left: int = 0
    carry: float = 0.0
    #: packets the next step may take, and what the running step popped and when
    take: int = 1
    popped: int = 0
    step_start: float = 0.0
    #: CPU its worker owes for packets received from other workers
    received_s: float = 0.0
    #: the senders of the packets its running step took that still hold their
    #: credit: on an event loop it goes back once the step ends (``Simulator`` doc)
    held_from: list[str] = field(default_factory=list)
    #: where its steps run on a Dask worker: the runtime's rule, fed the modelled
    #: steps' service (``LoopSteps``); ``cpu`` is the running step's
    steps: LoopSteps = field(default_factory=LoopSteps)
    cpu: float = 0.0
    #: on an event loop: it asked for a turn to push what a full queue held back
    waking: bool = False
    #: this replica's own random stream (common random numbers: see ``Simulator``)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    # accounting
    busy_s: float = 0.0
    blocked_s: float = 0.0
    blocked_since: float = 0.0
    queue_wait_s: float = 0.0
    items_in: int = 0
    batches: int = 0
    sizes: dict[int, int] = field(default_factory=dict)


class PacketFlow:
    """The packet-moving half of ``sim.Simulator`` (a mixin: the simulator holds
    the state and runs the steps)."""

    m: JobModel
    now: float
    reps: dict[str, Replica]
    workers: dict[str, Server]
    routes: dict[str, list[tuple[ChannelModel, list[str]]]]
    rr: dict[tuple[str, str], int]
    waiters: dict[str, list[Replica]]
    held: set[str]
    #: per worker: the packets that crossed workers at it (sent or received)
    ends: dict[str, int]

    if TYPE_CHECKING:

        def at(self, t: float, fn: Callable[[], None]) -> None: ...

        def _want_slot(self, r: Replica, follows: bool = False) -> None: ...

        def _work(
            self,
            r: Replica,
            seconds: float,
            then: Callable[[], None],
            on: str = "",
            items: int = 0,
            follows: bool = False,
        ) -> None: ...

        def _pace(self, r: Replica, popped: int, took: float) -> None: ...

    def _end_s(self, t: TaskModel, share: float) -> float:
        """CPU a packet crossing workers costs the worker of ``t``'s replica at
        its end: the task's own (``JobModel.end_s``), else ``share`` of
        ``transport_s``."""
        got = self.m.end_s.get(t.name)
        return (self.m.transport_s or 0.0) * share if got is None else got

    def _select(self, r: Replica, batch: list[float]) -> list[float]:
        s = r.task.selectivity
        if s == 1.0:
            return batch
        want = len(batch) * s + r.carry
        n = int(want)
        r.carry = want - n
        return [batch[i % len(batch)] for i in range(n)] if batch else []

    def _route(self, r: Replica, items: list[float]) -> None:
        size = self.m.buffer_size
        for ch, dsts in self.routes[r.task.name]:
            parts: dict[str, list[float]] = {}
            if len(dsts) == 1:
                parts[dsts[0]] = items
            elif ch.keyed:
                weights = [ch.shares.get(d, 1.0 / len(dsts)) for d in dsts]
                for e, d in zip(
                    items, r.rng.choices(dsts, weights, k=len(items)), strict=True
                ):
                    parts.setdefault(d, []).append(e)
            for i in range(0, len(items), size):
                chunk = items[i : i + size]
                if len(dsts) == 1 or ch.keyed:
                    break
                if ch.router == "round-robin":
                    k = (r.rid, ch.dst_task)
                    j = self.rr.get(k, 0) % len(dsts)
                    self.rr[k] = j + 1
                    d = dsts[j]
                else:
                    d = min(dsts, key=lambda x: len(self.reps[x].queue))
                parts.setdefault(d, []).extend(chunk)
            for d, part in parts.items():
                for i in range(0, len(part), size):
                    r.out.append((d, part[i : i + size]))

    def _push_out(self, r: Replica) -> None:
        while r.out:
            d, packet = r.out[0]
            dst = self.reps[d]
            if self._full(dst, r):
                if r.blocked_on is None:
                    r.blocked_since = self.now
                r.blocked_on = d
                self.waiters[d].append(r)
                if self.held and r.task.is_source:
                    self._release(r.worker)
                return
            r.out.popleft()
            dst.owed[r.rid] = dst.owed.get(r.rid, 0) + 1
            arrive = functools.partial(self._arrive, dst, packet, r.rid)
            if dst.worker == r.worker:
                arrive()
                continue
            dst.received_s += self._end_s(dst.task, 1.0 - SEND_SHARE)
            self.ends[dst.worker] = self.ends.get(dst.worker, 0) + 1
            self._mail(dst, arrive)
        if r.blocked_on is not None:
            r.blocked_s += self.now - r.blocked_since
            r.blocked_on = None
        if r.task.is_source:
            if r.left > 0:
                self._want_slot(r)
            elif self.held:
                self._release(r.worker)
        else:
            self._try_start(r)

    def _arrive(self, r: Replica, packet: list[float], sender: str) -> None:
        r.queue.append((self.now, packet, sender))
        self._try_start(r)

    def _mail(self, r: Replica, fn: Callable[[], None]) -> None:
        """``fn`` as a message from another worker to ``r``'s: at once, or once
        its busy event loop has read it (``LOOP_PASSES``)."""
        w = self.workers[r.worker]
        if r.task.engine or not w.post(fn, LOOP_PASSES):
            fn()

    def _full(self, dst: Replica, sender: Replica) -> bool:
        """Whether ``sender`` has no credit left for ``dst``: its own quota is
        used up (Dask), or the queue its senders share is full, counting the
        packets on their way and those whose credit is not back yet (``owed``)."""
        if dst.quota:
            return dst.owed.get(sender.rid, 0) >= dst.quota
        return bool(dst.capacity) and sum(dst.owed.values()) >= dst.capacity

    def _release(self, worker: str) -> None:
        """The replicas held on ``worker`` start: its source blocked or ended."""
        # in plan order: a set's order follows the process's string hash seed
        for rid in [
            x for x in self.reps if x in self.held and self.reps[x].worker == worker
        ]:
            self.held.discard(rid)
            self._try_start(self.reps[rid])

    def _on_loop(self, r: Replica) -> bool:
        return self.workers[r.worker].loop and not r.task.engine

    def _try_start(self, r: Replica, turn: bool = False) -> None:
        """``r`` takes packets and starts a step if it can; ``turn``: its turn on
        its worker's event loop came."""
        if r.busy or r.blocked_on is not None or r.out or r.rid in self.held:
            return
        if not turn and (r.queue or r.pending) and self._on_loop(r):
            # on an event loop a replica takes its packets when its turn comes,
            # not while another replica's step holds the loop
            r.busy = True
            self._work(r, 0.0, functools.partial(self._turn, r))
            return
        got = 0
        held: list[str] = []
        if r.queue:
            while r.queue and got < r.take:
                queued_at, packet, sender = r.queue.popleft()
                got += 1
                held.append(sender)
                r.items_in += len(packet)
                r.queue_wait_s += (self.now - queued_at) * len(packet)
                if not r.pending:
                    r.pending_since = self.now
                r.pending.extend(packet)
        # start before waking blocked writers: their packets must not join this step
        # beyond its take (they would through the re-entrant _try_start)
        if r.pending:
            t = r.task
            due = r.pending_since + t.fill_wait_s
            if t.fill_wait_s and len(r.pending) < t.fill_size and self.now < due:
                if not r.timer:
                    r.timer = True
                    self.at(due, lambda: self._fill_due(r))
                self._credit(r, held, on_loop=False)
                self._pace(r, got, 0.0)  # popped into the batch being filled
            else:
                r.popped, r.step_start = got, self.now
                self._credit(r, held, on_loop=self.workers[r.worker].loop)
                self._want_slot(r, follows=turn)
        self._wake_writers(r)

    def _turn(self, r: Replica) -> None:
        """``r``'s turn on its worker's event loop came: it takes its packets."""
        r.busy = False
        self._try_start(r, turn=True)

    def _credit(self, r: Replica, senders: list[str], *, on_loop: bool) -> None:
        """Packets ``r`` took from ``senders``: their credit goes back now, or,
        from senders on other workers to a step on an event loop, once the step
        ends (``held_from``)."""
        for sender in senders:
            if on_loop and not r.task.engine and self.reps[sender].worker != r.worker:
                r.held_from.append(sender)
            else:
                self._credited(r, sender)

    def _credited(self, r: Replica, sender: str) -> None:
        """One credit of ``sender``'s to ``r`` goes back: to a sender on another
        worker, as a message its loop reads."""
        back = functools.partial(self._credit_back, r, sender)
        src = self.reps[sender]
        if src.worker == r.worker:
            back()
        else:
            self._mail(src, back)

    def _credit_back(self, r: Replica, sender: str) -> None:
        r.owed[sender] -= 1
        if self.reps[sender].blocked_on == r.rid:
            self.at(self.now, functools.partial(self._wake_writers, r))

    def _fill_due(self, r: Replica) -> None:
        r.timer = False
        self._try_start(r)

    def _wake_writers(self, r: Replica) -> None:
        writers, self.waiters[r.rid] = self.waiters[r.rid], []
        for w in writers:
            if w.blocked_on != r.rid:
                continue
            if not self._on_loop(w):
                self._push_out(w)
            elif not w.waking:  # its loop resumes it in its turn
                w.waking = True
                self._work(w, 0.0, functools.partial(self._woken, w))

    def _woken(self, w: Replica) -> None:
        w.waking = False
        self._push_out(w)
