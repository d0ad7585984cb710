"""The sending side of an edge between replica actors (``runtime/transport.py``
describes the protocol): ``LocalOutlet`` pushes objects into a same-worker target's
``Inbox``; ``RemoteOutlet`` coalesces the packets it has credit for into pickled blobs,
keeps up to ``max_calls`` pushes in flight and blocks while it holds more packets than
credits (backpressure across processes, bounded memory).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sage_core.runtime.transport import (
    Inbox,
    TransportError,
    encode,
    entered,
    handed_over,
)

_perf = time.perf_counter


class LocalOutlet:
    """Sender side of a same-worker edge: pushes objects into the target's queue."""

    remote = False

    def __init__(self, sender: str, inbox: Inbox) -> None:
        self.sender, self.inbox = sender, inbox
        self.credits = inbox.quota
        self._room = asyncio.Event()
        inbox.attach_local(sender, self._grant)

    def _grant(self, n: int) -> None:
        self.credits += n
        self._room.set()

    def depth(self) -> float:
        return float(self.inbox.queue.size)

    def pressure(self) -> int:
        """0: the target's queue is empty; 1: it holds packets; 2: no credit left."""
        if self.credits <= 0:
            return 2
        return 1 if self.inbox.queue.size else 0

    async def send(self, packets: list[Any]) -> float:
        """Deliver ``packets``; returns seconds spent waiting for credit."""
        blocked = 0.0
        i = 0
        while i < len(packets):
            if self.credits <= 0:
                t0 = _perf()
                self._room.clear()
                while self.credits <= 0:
                    if self.inbox.closed:
                        raise TransportError("the receiving replica has stopped")
                    await self._room.wait()
                    self._room.clear()
                blocked += _perf() - t0
            k = min(self.credits, len(packets) - i)
            self.credits -= k
            chunk = packets[i : i + k]
            if blocked:  # they enter the queue now, after the wait for credit
                now = _perf()
                chunk = [entered(p, now) for p in chunk]
            handed_over(chunk)
            self.inbox.accept(self.sender, chunk)
            i += k
        return blocked

    async def drain(self) -> None:
        return None


Call = Callable[..., Awaitable[Any]]
#: push calls a ``RemoteOutlet`` has in flight at once by default
MAX_CALLS = 4


class RemoteOutlet:
    """Sender side of a cross-worker edge (see the module docstring).

    Args:
        sender: this replica's id.
        target: the receiving replica's id (for messages).
        push: ``await push(sender, seq, blob) -> credits returned`` (``seq`` numbers
            this sender's blobs 0, 1, 2, ...).
        wait_credit: ``await wait_credit(sender) -> credits returned``.
        credits: the receiver's quota for this sender.
        max_calls: most push calls in flight at once.
        link: whether ``push`` goes over a direct link (``runtime/link.py``) rather
            than actor calls (reported in the replica's metrics).
    """

    remote = True

    def __init__(
        self,
        sender: str,
        target: str,
        push: Call,
        wait_credit: Call,
        *,
        credits: int,
        max_calls: int = MAX_CALLS,
        link: bool = False,
    ) -> None:
        self.sender, self.target = sender, target
        self.link = link
        self._push, self._wait_credit = push, wait_credit
        self.credits = credits
        self.max_calls = max_calls
        self.pending: list[Any] = []
        self.in_flight = 0
        self._crediting = False
        self._changed = asyncio.Event()
        self.error: BaseException | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.calls = 0  # also the sequence number of the next blob
        self.bytes_sent = 0

    def depth(self) -> float:
        return float(len(self.pending) + self.in_flight)

    def pressure(self) -> int:
        """0: nothing on the way; 1: calls in flight; 2: packets wait to be sent."""
        if self.pending:
            return 2
        return 1 if self.in_flight else 0

    def _check(self) -> None:
        if self.error is not None:
            raise TransportError(
                f"sending to {self.target} failed: {type(self.error).__name__}: "
                f"{self.error}"
            ) from self.error

    def _pump(self) -> None:
        while self.pending and self.credits > 0 and self.in_flight < self.max_calls:
            k = min(self.credits, len(self.pending))
            batch, self.pending = self.pending[:k], self.pending[k:]
            self.credits -= k
            self.in_flight += 1
            handed_over(batch)
            blob = encode(batch)
            seq = self.calls
            self.calls += 1
            self.bytes_sent += len(blob)
            self._tasks.add(asyncio.ensure_future(self._call(seq, blob)))
        if (
            self.pending
            and self.credits <= 0
            and self.in_flight == 0
            and not self._crediting
        ):
            self._crediting = True
            self._tasks.add(asyncio.ensure_future(self._ask_credit()))

    async def _call(self, seq: int, blob: bytes) -> None:
        try:
            granted = await self._push(self.sender, seq, blob)
            self.credits += int(granted)
        except BaseException as exc:  # noqa: BLE001 - surfaced by send()/drain()
            self.error = self.error or exc
        finally:
            self._tasks.discard(asyncio.current_task())
            self.in_flight -= 1
            self._changed.set()
            if self.error is None:
                self._pump()

    async def _ask_credit(self) -> None:
        try:
            self.credits += int(await self._wait_credit(self.sender))
        except BaseException as exc:  # noqa: BLE001
            self.error = self.error or exc
        finally:
            self._tasks.discard(asyncio.current_task())
            self._crediting = False
            self._changed.set()
            if self.error is None:
                self._pump()

    async def send(self, packets: list[Any]) -> float:
        """Queue ``packets`` for sending; waits while more are pending than there is
        credit for. Returns the seconds spent waiting."""
        self._check()
        self.pending.extend(packets)
        self._pump()
        blocked = 0.0
        if len(self.pending) > self.credits:
            t0 = _perf()
            while len(self.pending) > self.credits and self.error is None:
                self._changed.clear()
                self._pump()
                await self._changed.wait()
            blocked = _perf() - t0
        self._check()
        return blocked

    async def drain(self) -> None:
        """Wait until every pending packet is delivered."""
        while (self.pending or self.in_flight) and self.error is None:
            self._changed.clear()
            self._pump()
            await self._changed.wait()
        self._check()
