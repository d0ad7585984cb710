"""The meeting point of HTTP requests and the running pipeline, in one process.

The HTTP side ``submit`` s items (each becomes an :class:`Envelope` with a fresh
request id) and awaits their :class:`Outcome`; the ``http-request`` source takes the
envelopes (``take``) and the ``http-response`` sink hands back what reached the end
(``deliver``). A request is complete when the weights of its items and markers add
up to 1 (see :mod:`sage_core.serve.envelope`). Hubs are found by id in this process
(``hub_for``); the runtime threads and the event loop share them under one lock.
A request submitted with ``stream=True`` also has a queue of generated text pieces
(``tokens``), filled from any thread by ``push_token`` (see
:mod:`sage_core.serve.tokens`) before its outcome resolves.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from sage_core.common.errors import SageError
from sage_core.serve.envelope import Envelope, Marker

_HUBS: dict[str, RequestHub] = {}
_REMOTE: dict[str, Any] = {}  # RemoteHub by locator, in worker processes
_HUBS_LOCK = threading.Lock()


class HubNotFound(SageError, LookupError):
    """The ``http-request``/``http-response`` operator runs in a process without its
    hub: served pipelines run on the embedded runtime of the serving process."""


class Overloaded(SageError):
    """More requests in flight than the hub's cap (the HTTP side answers 429)."""


@dataclass(slots=True)
class Outcome:
    """How a request ended: ``status`` is ``"ok"``, ``"dropped"`` (filtered: no
    output), ``"failed"`` (``error`` says which operator and why) or
    ``"expired"`` (its deadline passed). ``items`` are the outputs in order;
    ``multi`` whether a flat_map was passed (the answer is a list)."""

    status: str
    items: list[Any] = field(default_factory=list)
    multi: bool = False
    error: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Outcome]
    loop: asyncio.AbstractEventLoop
    done: Fraction = Fraction(0)
    outputs: list[tuple[tuple[int, ...], Any]] = field(default_factory=list)
    multi: bool = False
    markers: list[Marker] = field(default_factory=list)
    tokens: asyncio.Queue[str] | None = None
    sent: int = 0  # characters of text put on ``tokens``


class RequestHub:
    """Pending requests of one served pipeline.

    Args:
        name: the pipeline's name.
        max_in_flight: the most requests (items) admitted and not yet answered.
    """

    def __init__(self, name: str, *, max_in_flight: int = 256) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.id = uuid.uuid4().hex
        self.name = name
        self.max_in_flight = max_in_flight
        self.closed = False
        #: the job generation whose source takes requests (a rolled job's source,
        #: of an older generation, stops: see ``retire_before``)
        self.generation = 0
        self._queue: queue.SimpleQueue[Envelope] = queue.SimpleQueue()
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        #: requests answered, by outcome status; refused (429) and cancelled
        self.counts: dict[str, int] = {}
        #: requests that arrived since the start, admitted or refused (the demand
        #: the autoscaler sizes for)
        self.arrived = 0

    # --- registry -------------------------------------------------------------

    def register(self) -> RequestHub:
        with _HUBS_LOCK:
            _HUBS[self.id] = self
        return self

    def close(self) -> None:
        """No new requests; the source ends once it has handed out what is queued."""
        self.closed = True

    def retire_before(self, generation: int) -> None:
        """From now on only the source of job ``generation`` takes requests; older
        sources end (their jobs finish the requests they hold)."""
        self.generation = max(self.generation, generation)

    def retired(self, generation: int) -> bool:
        """Whether the source of job ``generation`` should end."""
        return self.closed or generation < self.generation

    def unregister(self) -> None:
        with _HUBS_LOCK:
            _HUBS.pop(self.id, None)

    # --- HTTP side ------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def waiting(self) -> int:
        """Requests admitted that no source has taken yet (the hub's backlog)."""
        return self._queue.qsize()

    def submit(
        self, items: list[Any], *, deadline: float | None = None, stream: bool = False
    ) -> list[tuple[str, asyncio.Future[Outcome]]]:
        """Admit ``items`` as requests (all or none); call from the event loop.
        With ``stream`` each gets a queue of generated text pieces (``tokens``).

        Raises:
            Overloaded: admitting them would pass ``max_in_flight``.
            HubNotFound: the hub is closed.
        """
        if self.closed:
            raise HubNotFound(f"pipeline {self.name!r} is shutting down")
        loop = asyncio.get_running_loop()
        out = []
        with self._lock:
            self.arrived += len(items)
            if len(self._pending) + len(items) > self.max_in_flight:
                self._count("refused", len(items))
                raise Overloaded(
                    f"pipeline {self.name!r} has {len(self._pending)} requests in "
                    f"flight (cap {self.max_in_flight}); retry later"
                )
            for _ in items:
                rid = uuid.uuid4().hex
                fut: asyncio.Future[Outcome] = loop.create_future()
                self._pending[rid] = _Pending(
                    fut, loop, tokens=asyncio.Queue() if stream else None
                )
                out.append((rid, fut))
        for (rid, _), item in zip(out, items, strict=True):
            self._queue.put(Envelope(rid, item, deadline=deadline))
        return out

    def cancel(self, rid: str) -> None:
        """Forget a request no one waits for any more; its items are skipped."""
        with self._lock:
            if self._pending.pop(rid, None) is not None:
                self._count("cancelled")

    def tokens(self, rid: str) -> asyncio.Queue[str] | None:
        """The queue of text pieces of a streamed request (None: not streamed)."""
        with self._lock:
            p = self._pending.get(rid)
        return p.tokens if p is not None else None

    # --- pipeline side --------------------------------------------------------

    def wants_tokens(self, rid: str) -> bool:
        """Whether the request waits for its text piece by piece."""
        with self._lock:
            p = self._pending.get(rid)
            return p is not None and p.tokens is not None

    def push_token(self, rid: str, offset: int, piece: str) -> None:
        """Queue the text ``piece`` that starts at character ``offset`` of the
        request's answer; what was queued already (a retried generation) or would
        leave a gap is skipped. Any thread."""
        with self._lock:
            p = self._pending.get(rid)
            if p is None or p.tokens is None:
                return
            end = offset + len(piece)
            if offset > p.sent or end <= p.sent:
                return
            piece, p.sent = piece[p.sent - offset :], end
            p.loop.call_soon_threadsafe(p.tokens.put_nowait, piece)

    def take(self, timeout: float, generation: int = 0) -> Envelope | None:
        """The next live request envelope, waiting up to ``timeout`` seconds (None
        at once for a retired generation's source)."""
        end = time.monotonic() + timeout
        while generation >= self.generation:
            try:
                env = self._queue.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return None
            if env.rid not in self._pending:
                continue  # cancelled before it started
            if env.deadline is not None and time.time() > env.deadline:
                self.deliver([Marker(env.rid, "expired")])
                continue
            return env
        return None

    def deliver(self, items: Iterable[Any]) -> None:
        """Record what reached the sink; complete the requests it finishes."""
        finished: list[tuple[_Pending, Outcome]] = []
        with self._lock:
            for x in items:
                p = self._pending.get(x.rid)
                if p is None:
                    continue  # cancelled or answered already
                if isinstance(x, Envelope):
                    p.outputs.append((x.path, x.item))
                    p.multi = p.multi or x.multi
                else:
                    p.markers.append(x)
                p.done += x.weight
                if p.done >= 1:
                    del self._pending[x.rid]
                    outcome = _outcome(p)
                    self._count(outcome.status)
                    finished.append((p, outcome))
        for p, outcome in finished:
            p.loop.call_soon_threadsafe(_resolve, p.future, outcome)

    def _count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


def _resolve(fut: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not fut.done():
        fut.set_result(outcome)


def _outcome(p: _Pending) -> Outcome:
    failed = [m for m in p.markers if m.kind == "failed"]
    if failed:
        return Outcome("failed", error=dict(failed[0].error))
    if any(m.kind == "expired" for m in p.markers):
        return Outcome("expired")
    items = [item for _, item in sorted(p.outputs, key=lambda o: o[0])]
    if not items:
        return Outcome("dropped")
    return Outcome("ok", items=items, multi=p.multi)


def hub_for(locator: str) -> RequestHub:
    """The hub a ``hub`` config names: registered in this process under that id,
    or, for ``ID@HOST:PORT/KEY``, the serving process's hub behind its
    :class:`~sage_core.serve.remote.HubServer` (one connection per process).

    Raises:
        HubNotFound: no hub of this process has the id, and no server is named.
        HubUnreachable: the named server does not answer or refuses the key.
    """
    from sage_core.serve.remote import RemoteHub, parse_locator

    hub_id, where = parse_locator(locator)
    with _HUBS_LOCK:
        hub = _HUBS.get(hub_id) or _REMOTE.get(locator)
    if hub is not None:
        return hub
    if where is None:
        raise HubNotFound(
            f"no served pipeline {hub_id!r} in this process: http-request and "
            f"http-response run on the serving process's embedded runtime, or name "
            f"its hub server (sage serve --address)"
        )
    remote: Any = RemoteHub(hub_id, *where)
    with _HUBS_LOCK:
        return _REMOTE.setdefault(locator, remote)
