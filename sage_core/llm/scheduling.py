"""The request-policy interface: how queued requests are ordered and released.

A policy holds the requests admitted but not yet dispatched. The control plane calls
``pop(view)`` whenever an engine slot may be free; the policy returns the request(s) to
dispatch next — one request, or a batch of embedding requests that the dispatcher merges
into one engine call — or None. ``view`` says which pools (``"llm:<model>"``,
``"embedding:<model>"``) have a free engine slot right now and how many requests are in
flight, so a policy can hold work back (batching, reserving capacity).

Policies are plugins (``register_request_policies``); the built-in
ones live in ``schedulers/requests.py``. :class:`KeyedPolicy` is the machinery they
share: one heap per pool, ordered by a key, with O(log n) removal by tombstone.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from sage_core.llm.classify import LLMRequest


class DispatchView(Protocol):
    """What a policy may read about the engines when it chooses."""

    now: float

    def ready(self, pool: str) -> bool:
        """True when a healthy engine of ``pool`` has a free slot."""
        ...

    def inflight(self, pool: str) -> int:
        """Requests (or batches) of ``pool`` being served now."""
        ...

    def inflight_kind(self, engine_kind: str) -> int:
        """Requests being served by all engines of one kind (``llm``/``embedding``)."""
        ...

    def engines(self, pool: str) -> int:
        """Healthy engines serving ``pool``."""
        ...

    def ready_apart(self, pool: str) -> bool:
        """True when an engine of ``pool`` has a free slot on a device where no
        engine of the other kind has work in flight (always so for engines without
        a ``device`` label)."""
        ...


class RequestPolicy:
    """Base class of request policies. Subclasses set ``name`` and implement the
    five methods below; config arrives as keyword arguments."""

    name: ClassVar[str] = ""

    #: decision records kept for ``take_events`` at most (the oldest go first)
    EVENT_BACKLOG: ClassVar[int] = 1024

    def __init__(self, **config: Any) -> None:
        self.config = config
        self._events: deque[dict[str, Any]] = deque(maxlen=self.EVENT_BACKLOG)

    def push(self, request: LLMRequest) -> None:
        """Queue one admitted request."""
        raise TypeError(f"{type(self).__name__} must implement push()")

    def pop(self, view: DispatchView) -> list[LLMRequest] | None:
        """The request(s) to dispatch now, or None to wait for the next event."""
        raise TypeError(f"{type(self).__name__} must implement pop()")

    def remove(self, request: LLMRequest) -> bool:
        """Forget a queued request (client gone, timed out); False if not queued."""
        raise TypeError(f"{type(self).__name__} must implement remove()")

    def requests(self) -> list[LLMRequest]:
        """Every queued request, in arrival order (used to switch policies)."""
        raise TypeError(f"{type(self).__name__} must implement requests()")

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} must implement __len__()")

    def wake_after(self, now: float) -> float | None:
        """Seconds after which ``pop`` should be called even with no new event (a
        batch wait bound running out), or None."""
        return None

    def observe(self, batch: list[LLMRequest], seconds: float) -> None:
        """An embedding engine answered ``batch`` (one call) in ``seconds``:
        policies that size batches from measured cost learn here."""
        return

    def finished(self, request: LLMRequest, status: str, now: float) -> None:
        """``request`` left the gateway at ``now`` (``status`` ok or an error):
        policies that watch objectives met or missed learn here."""
        return

    def record_event(self, record: dict[str, Any]) -> None:
        """Keep a decision made beyond releasing requests (a switch, why a batch
        left), JSON-friendly, for ``take_events``."""
        self._events.append(record)

    def take_events(self) -> list[dict[str, Any]]:
        """The decisions recorded since the last call (``record_event``; at most
        ``EVENT_BACKLOG``); the gateway's decision log writes each as a
        ``policy-event``."""
        events = list(self._events)
        self._events.clear()
        return events

    def describe(self) -> dict[str, Any]:
        """JSON-friendly name and config (``GET /admin/policy``)."""
        return {"name": self.name, "config": dict(self.config)}


class _PoolHeap:
    """A heap of (key, seq, tick, request) with tombstones for O(log n) removal.

    A tombstone names one push (its ``tick``), not the request: a request removed
    and pushed again (a policy switch and back) is live once more."""

    __slots__ = ("dead", "heap", "live", "tick", "ticks")

    def __init__(self) -> None:
        self.heap: list[tuple[Any, int, int, LLMRequest]] = []
        self.dead: set[int] = set()
        self.ticks: dict[int, int] = {}  # seq -> tick of its live entry
        self.tick = 0
        self.live = 0

    def push(self, key: Any, request: LLMRequest) -> None:
        self.tick += 1
        heapq.heappush(self.heap, (key, request.seq, self.tick, request))
        self.ticks[request.seq] = self.tick
        self.live += 1

    def _settle(self) -> None:
        while self.heap and self.heap[0][2] in self.dead:
            self.dead.discard(heapq.heappop(self.heap)[2])

    def peek(self) -> tuple[Any, LLMRequest] | None:
        self._settle()
        if not self.heap:
            return None
        key, _, _, request = self.heap[0]
        return key, request

    def pop(self) -> LLMRequest:
        self._settle()
        _, seq, _, request = heapq.heappop(self.heap)
        del self.ticks[seq]
        self.live -= 1
        return request

    def kill(self, request: LLMRequest) -> None:
        self.dead.add(self.ticks.pop(request.seq))
        self.live -= 1
        if len(self.dead) > 64 and len(self.dead) > self.live:
            self.heap = [e for e in self.heap if e[2] not in self.dead]
            heapq.heapify(self.heap)
            self.dead.clear()

    def items(self) -> Iterator[LLMRequest]:
        return (e[3] for e in self.heap if e[2] not in self.dead)


class KeyedPolicy(RequestPolicy):
    """Serve, among pools with a free engine slot, the request with the smallest
    ``key(request, now)``. Subclasses define ``key``; keys must not change while a
    request waits (they are computed once at push)."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._pools: dict[str, _PoolHeap] = {}
        self._where: dict[int, str] = {}

    def key(self, request: LLMRequest) -> Any:
        raise TypeError(f"{type(self).__name__} must implement key()")

    def push(self, request: LLMRequest) -> None:
        pool = request.pool
        heap = self._pools.get(pool)
        if heap is None:
            heap = self._pools[pool] = _PoolHeap()
        heap.push(self.key(request), request)
        self._where[request.seq] = pool

    def best(
        self, view: DispatchView, pools: Iterable[str] | None = None
    ) -> str | None:
        """The ready pool whose head has the smallest key, or None."""
        chosen: str | None = None
        chosen_key: Any = None
        for pool in self._pools if pools is None else pools:
            heap = self._pools.get(pool)
            if heap is None or not heap.live or not view.ready(pool):
                continue
            head = heap.peek()
            if head is not None and (chosen is None or head[0] < chosen_key):
                chosen, chosen_key = pool, head[0]
        return chosen

    def take(self, pool: str) -> LLMRequest:
        request = self._pools[pool].pop()
        del self._where[request.seq]
        return request

    def pop(self, view: DispatchView) -> list[LLMRequest] | None:
        pool = self.best(view)
        return None if pool is None else [self.take(pool)]

    def remove(self, request: LLMRequest) -> bool:
        pool = self._where.pop(request.seq, None)
        if pool is None:
            return False
        self._pools[pool].kill(request)
        return True

    def requests(self) -> list[LLMRequest]:
        found = [r for heap in self._pools.values() for r in heap.items()]
        return sorted(found, key=lambda r: r.seq)

    def __len__(self) -> int:
        return len(self._where)
