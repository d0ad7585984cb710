"""Direct links between replica actors: the data path of cross-worker edges.

A Dask actor call (``actor_execute``) costs a round of the worker's RPC layer per
call: a handler lookup, a message dict, argument serialisation and a pooled
connection. Packets between replicas need none of that. Each receiving replica
opens one listener on its worker's host (``LinkServer``, same scheme and TLS
settings as the worker itself) the first time a sender asks for it (``link()``
through one ordinary actor call); from then on a sender's ``LinkPool`` keeps up to
``max_calls`` persistent comms to it and writes small ``[op, sender, seq, blob]``
messages whose blob travels as one frame. The reply of a push carries the credits
the receiver gives back; a ``credit`` message waits for them.

Every message carries the listener's random token: a comm that does not present it
is closed without being read further (the wire format is pickle, so only senders
that learnt the token from the actor itself may talk to a replica). With ``tls://``
workers the link uses the worker's certificates like any Dask connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

#: schemes a link can listen on (others, e.g. ucx, keep the actor-call path)
SCHEMES = ("tcp", "tls", "inproc")

Handler = Callable[[str, int, bytes], Awaitable[int]]


def link_scheme(worker_address: str) -> str | None:
    scheme = worker_address.split("://", 1)[0]
    return scheme if scheme in SCHEMES else None


class LinkServer:
    """The receiving end: one listener per replica actor, started on first use.

    ``push(sender, seq, blob) -> credits`` and ``credit(sender) -> credits`` are the
    replica's own handlers (the same code the actor-call path runs).
    """

    def __init__(self, push: Handler, credit: Callable[[str], Awaitable[int]]):
        self._push, self._credit = push, credit
        self.token = secrets.token_hex(16)
        self._listener: Any = None
        self._comms: set[Any] = set()
        self.address: str | None = None

    async def start(self, worker: Any) -> str | None:
        """Listen beside ``worker``; the contact address, or None where links do
        not apply (an unsupported scheme or a listener that would not start)."""
        if self.address is not None or self._listener is not None:
            return self.address
        scheme = link_scheme(worker.address)
        if scheme is None:
            return None
        from distributed.comm import listen
        from distributed.comm.addressing import get_address_host

        if scheme == "inproc":
            where = "inproc://"
        else:
            where = f"{scheme}://{get_address_host(worker.address)}:0"
        try:
            self._listener = listen(
                where,
                self._serve,
                deserialize=False,
                **worker.security.get_listen_args("worker"),
            )
            await self._listener.start()
        except Exception as exc:  # noqa: BLE001 - fall back to actor calls
            logger.warning("no direct link at %s (%r): using actor calls", where, exc)
            self._listener = None
            return None
        self.address = self._listener.contact_address
        return self.address

    async def _serve(self, comm: Any) -> None:
        self._comms.add(comm)
        try:
            while True:
                msg = await comm.read()
                if not isinstance(msg, (list, tuple)) or len(msg) != 5:
                    return
                token, op, sender, seq, blob = msg
                if not secrets.compare_digest(str(token), self.token):
                    logger.warning("closing a link that presented a wrong token")
                    return
                try:
                    if op == "push":
                        n = await self._push(sender, seq, bytes(blob))
                    elif op == "credit":
                        n = await self._credit(sender)
                    else:
                        return
                    reply: Any = ["ok", int(n)]
                except Exception as exc:  # noqa: BLE001 - sent back to the sender
                    reply = ["error", f"{type(exc).__name__}: {exc}"]
                await comm.write(reply)
        except Exception:  # noqa: BLE001 - the sender went away; it sees its own error
            return
        finally:
            self._comms.discard(comm)
            if not comm.closed():
                comm.abort()

    def close(self) -> None:
        for comm in list(self._comms):
            comm.abort()
        self._comms.clear()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


class LinkError(ConnectionError):
    """The receiving replica refused a message (its error, as text)."""


class LinkPool:
    """The sending end: up to ``size`` persistent comms to one receiving replica."""

    def __init__(self, address: str, token: str, connection_args: dict[str, Any]):
        self.address, self.token = address, token
        self._args = connection_args
        self._idle: list[Any] = []
        self._all: set[Any] = set()

    async def _comm(self) -> Any:
        while self._idle:
            comm = self._idle.pop()
            if not comm.closed():
                return comm
            self._all.discard(comm)
        from distributed.comm import connect

        comm = await connect(self.address, deserialize=False, **self._args)
        self._all.add(comm)
        return comm

    async def warm(self, n: int) -> None:
        """Open ``n`` comms now (concurrently) so that the first packets do not
        pay for connecting: a job's sources start right after its wiring."""
        comms = await asyncio.gather(*(self._comm() for _ in range(n)))
        self._idle.extend(comms)

    async def _call(self, op: str, sender: str, seq: int, blob: bytes) -> int:
        comm = await self._comm()
        try:
            await comm.write([self.token, op, sender, seq, blob])
            status, value = await comm.read()
        except BaseException:
            self._all.discard(comm)
            comm.abort()
            raise
        self._idle.append(comm)
        if status != "ok":
            raise LinkError(value)
        return int(value)

    async def push(self, sender: str, seq: int, blob: bytes) -> int:
        return await self._call("push", sender, seq, blob)

    async def credit(self, sender: str) -> int:
        return await self._call("credit", sender, -1, b"")

    def close(self) -> None:
        for comm in self._all:
            comm.abort()
        self._all.clear()
        self._idle.clear()
