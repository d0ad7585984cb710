"""Request hubs across processes: serving a pipeline whose operators run on a Dask
cluster (``sage serve SPEC --address ...``).

The hub stays in the serving process, beside the HTTP routes. A :class:`HubServer`
listens next to it (``multiprocessing.connection``: each connection must answer an
HMAC challenge with the hub's random key before anything it sends is read), and the
operators on the workers (the ``http-request`` source, the ``http-response`` sink,
operators streaming text) reach it through a :class:`RemoteHub`: the same
``take``/``retired``/``deliver``/``wants_tokens``/``push_token`` calls and
``closed`` flag, one round trip each.

The operators find the hub by its *locator*, the hub id in their config: a bare id
is a hub of their own process; ``ID@HOST:PORT/KEY`` one behind a server. The key
travels in the plan like the rest of the operators' config, so whoever may read the
cluster's plans may talk to the hub (they may also run code on its workers).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
from collections.abc import Iterable
from multiprocessing import AuthenticationError
from multiprocessing.connection import (
    Client,
    Connection,
    Listener,
    answer_challenge,
    deliver_challenge,
)
from typing import TYPE_CHECKING, Any

from sage_core.common.errors import SageError

if TYPE_CHECKING:
    from sage_core.serve.envelope import Envelope
    from sage_core.serve.hub import RequestHub

logger = logging.getLogger(__name__)

#: what a remote hub may be asked
METHODS = ("take", "retired", "deliver", "wants_tokens", "push_token")


class HubUnreachable(SageError, ConnectionError):
    """The serving process's hub did not answer (it stopped, or the key is wrong)."""


def parse_locator(locator: str) -> tuple[str, tuple[str, int, bytes] | None]:
    """``(hub id, (host, port, key) or None)`` of a hub locator."""
    hub_id, at, rest = locator.partition("@")
    if not at:
        return hub_id, None
    where, slash, key = rest.rpartition("/")
    host, colon, port = where.rpartition(":")
    if not (slash and colon and host and port.isdigit() and key):
        raise ValueError(f"not a hub locator (ID@HOST:PORT/KEY): {locator!r}")
    return hub_id, (host.strip("[]"), int(port), key.encode())


class HubServer:
    """Serves ``hub`` to operators in other processes (see the module docstring).

    Args:
        hub: the request hub of this process.
        host: the interface to listen on, one the workers can reach.
    """

    def __init__(self, hub: RequestHub, host: str) -> None:
        self.hub = hub
        self._key = secrets.token_hex(16)
        # no authkey here: the challenge runs in each connection's own thread, so
        # a peer that never answers it holds up only itself
        self._listener = Listener((host, 0))
        port = self._listener.address[1]
        self.locator = f"{hub.id}@{host}:{port}/{self._key}"
        self._closed = False
        self._conns: set[Connection] = set()
        self._lock = threading.Lock()
        threading.Thread(
            target=self._accept, name=f"sage-hub-{hub.name}", daemon=True
        ).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except OSError:
                if self._closed:
                    return
                continue
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        hub = self.hub
        try:
            key = self._key.encode()
            try:
                deliver_challenge(conn, key)
                answer_challenge(conn, key)
            except AuthenticationError:
                logger.warning("refused a hub connection that did not know the key")
                return
            while True:
                method, args = conn.recv()
                if method not in METHODS:
                    conn.send(("error", f"unknown hub call {method!r}"))
                    continue
                try:
                    value = getattr(hub, method)(*args)
                except Exception as exc:  # noqa: BLE001 - the caller's error
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))
                    continue
                conn.send(("ok", (value, hub.closed)))
        except (EOFError, OSError):
            return
        finally:
            with self._lock:  # never while close() shuts it down
                self._conns.discard(conn)
                conn.close()

    def close(self) -> None:
        """Stop listening and end every connection (each one's thread closes it)."""
        self._closed = True
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                with (
                    socket.fromfd(
                        conn.fileno(), socket.AF_INET, socket.SOCK_STREAM
                    ) as dup,
                    contextlib.suppress(OSError),  # the peer is gone already
                ):
                    dup.shutdown(socket.SHUT_RDWR)  # its thread's recv sees EOF


class RemoteHub:
    """A hub in another process, called over one authenticated connection (calls
    from several threads take turns)."""

    def __init__(self, hub_id: str, host: str, port: int, key: bytes) -> None:
        self.id = hub_id
        self._where = f"{host}:{port}"
        try:
            self._conn = Client((host, port), authkey=key)
        except (OSError, EOFError, AuthenticationError) as exc:
            raise HubUnreachable(
                f"cannot reach the request hub at {self._where} (the serving "
                f"process): {type(exc).__name__}: {exc}"
            ) from exc
        self._lock = threading.Lock()
        self.closed = False

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            try:
                self._conn.send((method, args))
                status, value = self._conn.recv()
            except (OSError, EOFError) as exc:
                # the serving process went away: nothing more will be asked
                self.closed = True
                raise HubUnreachable(
                    f"the request hub at {self._where} stopped answering: {exc}"
                ) from exc
        if status != "ok":
            raise HubUnreachable(f"the request hub at {self._where} said: {value}")
        result, self.closed = value
        return result

    def take(self, timeout: float, generation: int = 0) -> Envelope | None:
        return self._call("take", timeout, generation)

    def retired(self, generation: int) -> bool:
        return bool(self._call("retired", generation))

    def deliver(self, items: Iterable[Any]) -> None:
        self._call("deliver", list(items))

    def wants_tokens(self, rid: str) -> bool:
        return bool(self._call("wants_tokens", rid))

    def push_token(self, rid: str, offset: int, piece: str) -> None:
        self._call("push_token", rid, offset, piece)
