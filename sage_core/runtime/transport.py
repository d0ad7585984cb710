"""Moving packets between replica actors: credit-based flow control and batch blobs.

Every replica actor owns an ``Inbox``: one native ``BoundedQueue`` shared by all its
upstream replicas. Each upstream replica (sender) owns a fixed share of the queue's
slots, its *credits* (``quota``: the plan's queue capacity split evenly, at least one
slot each), so a sender can never have more packets in the queue or on the wire than
the receiver has room for. A slot's credit goes back to the sender that used it when
the receiver pops the packet:

* same-worker senders (``LocalOutlet``, ``runtime/outlets.py``) push straight into the native queue (no
  serialisation) and get their credits back by a direct call;
* cross-worker senders (``RemoteOutlet``) coalesce the packets they have credit for
  into one pickled blob per actor call (one ``pickle.dumps`` of the packet list, never
  a frame per item), keep up to ``max_calls`` calls in flight, and get credits back in
  the reply of each push or, when they are out of credit with nothing in flight, from
  a ``wait_credit`` call that returns once the receiver has popped their packets.
  Calls in flight together may arrive in any order (Dask uses a pool of connections),
  so every blob carries the sender's sequence number and the receiver enqueues blobs
  in sequence order (``accept_in_order``): packets of one sender, end-of-stream
  markers included, enter the queue in the order they were sent. Early blobs wait in
  a per-sender hold that the sender's credits bound.

Everything here runs on the worker's event loop (one thread), so no locks are needed;
waiting is ``await``.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sage_core.channels import BoundedQueue
from sage_core.common.errors import SageError
from sage_core.compiler.settings import quota
from sage_core.observe.traces import mark_left


class TransportError(SageError):
    """A packet could not be delivered to a downstream replica."""


def handed_over(packets: Sequence[Any]) -> None:
    """The traces ``packets`` carry leave their sender now (``traces.mark_left``):
    call it just before the packets go into a queue or a blob."""
    wall = 0.0
    for p in packets:
        if type(p) is tuple and p[3]:
            wall = wall or time.time()
            for trace in p[3]:
                mark_left(trace, wall)


def entered(packet: Any, now: float) -> Any:
    """``packet`` stamped as entering a queue at ``now`` (``time.perf_counter``):
    its queue wait starts there, not where the sender emitted it, whatever it
    waited for room or crossed on the way. Markers and barriers pass as they are."""
    if type(packet) is not tuple:
        return packet
    items, index, _, traces, sender = packet
    return (items, index, now, traces, sender)


def encode(packets: list[Any]) -> bytes:
    """One blob for a list of packets (items, input index, sent time, traces)."""
    return pickle.dumps(packets, protocol=5)


def decode(blob: bytes) -> list[Any]:
    return pickle.loads(blob)


class Inbox:
    """The input side of one replica: native queue, slot owners, credit returns."""

    def __init__(self, capacity: int, senders: list[str]) -> None:
        self.senders = list(senders)
        self.quota = quota(capacity, len(self.senders))
        self.queue = BoundedQueue(max(1, self.quota * max(1, len(self.senders))))
        self._origins: deque[str] = deque()
        self._owed = dict.fromkeys(self.senders, 0)
        self._local: dict[str, Callable[[int], None]] = {}
        self._credit_waiters: dict[str, asyncio.Future[int]] = {}
        self._next_seq = dict.fromkeys(self.senders, 0)
        self._held: dict[str, dict[int, list[Any]]] = {s: {} for s in self.senders}
        self._wake: asyncio.Event | None = None
        self.closed = False

    def _event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    def add_sender(self, sender: str) -> int:
        """A sender added while the job runs (``compiler.rescale``): it gets the
        same quota as the others, and the queue grows by as much so that no
        sender's credit shrinks; returns its quota. The queue is replaced (read
        ``queue`` again after this).

        Raises:
            TransportError: ``sender`` already sends here, or the inbox is closed.
        """
        if sender in self._owed:
            raise TransportError(f"{sender!r} already sends to this replica")
        if self.closed:
            raise TransportError("the receiving replica has stopped")
        old = self.queue
        queue = BoundedQueue(old.capacity + self.quota)
        for p in old.pop_many(old.size, 0) if old.size else ():
            queue.try_push(p)
        self.queue = queue
        self.senders.append(sender)
        self._owed[sender] = 0
        self._next_seq[sender] = 0
        self._held[sender] = {}
        return self.quota

    def wake(self) -> None:
        """Wake a driver waiting for data (it has other work: queued rewires)."""
        self._event().set()

    def attach_local(self, sender: str, grant: Callable[[int], None]) -> None:
        """A same-worker sender: credits go back through ``grant(n)``."""
        self._local[sender] = grant

    def accept(self, sender: str, packets: list[Any]) -> None:
        """Enqueue packets the sender had credit for.

        Raises:
            TransportError: the inbox is closed, the sender is unknown, or it sent
                more than its credit (a protocol violation; never silently dropped).
        """
        if self.closed:
            raise TransportError("the receiving replica has stopped")
        if sender not in self._owed:
            raise TransportError(f"{sender!r} is not an upstream replica here")
        # Each packet's origin is recorded as it enters the queue, so a push that
        # fails part-way leaves every queued packet with its origin (and its credit
        # returned when popped).
        push, origins = self.queue.try_push, self._origins
        try:
            for p in packets:
                if not push(p):
                    raise TransportError(
                        f"{sender!r} sent more packets than its {self.quota} credits"
                    )
                origins.append(sender)
        finally:
            self._event().set()

    def accept_in_order(self, sender: str, seq: int, packets: list[Any]) -> None:
        """Enqueue the sender's blob number ``seq`` once blobs ``0..seq-1`` are in;
        until then it waits in the sender's hold.

        Raises:
            TransportError: as ``accept``, or ``seq`` was already received.
        """
        if sender not in self._next_seq:
            raise TransportError(f"{sender!r} is not an upstream replica here")
        held = self._held[sender]
        expected = self._next_seq[sender]
        if seq < expected or seq in held:
            raise TransportError(f"{sender!r} sent blob {seq} twice")
        if seq != expected:
            held[seq] = packets
            return
        self.accept(sender, packets)
        expected += 1
        while expected in held:
            self.accept(sender, held.pop(expected))
            expected += 1
        self._next_seq[sender] = expected

    @property
    def held(self) -> int:
        """Packets received ahead of their turn, not yet in the queue."""
        return sum(len(p) for h in self._held.values() for p in h.values())

    def pop(self, max_packets: int) -> list[Any]:
        """Take up to ``max_packets`` packets (never waits) and return their credits."""
        packets = self.queue.pop_many(max_packets, 0)
        if packets:
            origins, owed = self._origins, self._owed
            for _ in range(len(packets)):
                owed[origins.popleft()] += 1
            self._return_credits()
        return packets

    def _return_credits(self) -> None:
        owed = self._owed
        for sender, grant in self._local.items():
            n = owed[sender]
            if n:
                owed[sender] = 0
                grant(n)
        for sender, fut in list(self._credit_waiters.items()):
            n = owed[sender]
            if n and not fut.done():
                owed[sender] = 0
                fut.set_result(n)
                del self._credit_waiters[sender]

    def take_owed(self, sender: str) -> int:
        """Credits popped since the sender last heard back (returned in push replies)."""
        n = self._owed.get(sender, 0)
        if n:
            self._owed[sender] = 0
        return n

    async def wait_credit(self, sender: str) -> int:
        """Wait until the receiver has popped some of ``sender``'s packets."""
        n = self.take_owed(sender)
        if n or self.closed:
            return n
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._credit_waiters[sender] = fut
        return await fut

    async def wait(self, timeout: float | None) -> None:
        """Wait for a push (or ``timeout`` seconds); returns at once if data is there."""
        if self.queue.size or self.closed:
            return
        ev = self._event()
        ev.clear()
        if timeout is None:
            await ev.wait()
            return
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def close(self) -> None:
        self.closed = True
        self.queue.close()
        for fut in self._credit_waiters.values():
            if not fut.done():
                fut.set_result(0)
        self._credit_waiters.clear()
        self._event().set()
