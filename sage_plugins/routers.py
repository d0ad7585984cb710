"""Dataflow routers: ``round-robin``, ``broadcast``, ``key-hash``, ``least-queue``.

Each implements ``route()`` (one item or request) and a ``partition()`` fast path that
routes a whole micro-batch at once. ``round-robin`` is shared with the LLM control
plane (scope ``any``); every router skips unhealthy candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sage_core import hookimpl
from sage_core.channels import stable_hash
from sage_core.routing import Candidate, Router, RouteRequest, healthy_indices

#: keys remembered by key-hash before its cache is cleared
_KEY_CACHE_LIMIT = 1 << 16


class _WholeBatch(Router):
    """Routers deciding once per micro-batch: a turn counter for ``route()``, and a
    ``partition()`` sending the whole batch (in order) to ``route()``'s choice."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._turn = 0

    def partition(
        self,
        items: Sequence[Any],
        keys: Sequence[Any] | None,
        candidates: Sequence[Candidate],
    ) -> list[list[Any]]:
        out: list[list[Any]] = [[] for _ in candidates]
        out[self.route(RouteRequest(), candidates)[0]] = list(items)
        return out


class RoundRobin(_WholeBatch):
    """Healthy candidates in turn. A micro-batch goes whole to the next candidate,
    which keeps its items in order and costs one decision per batch."""

    name = "round-robin"

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        healthy = healthy_indices(candidates)
        choice = healthy[self._turn % len(healthy)]
        self._turn += 1
        return [choice]


class Broadcast(Router):
    """Every item to every healthy candidate."""

    name = "broadcast"
    fanout = True

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        return healthy_indices(candidates)

    def partition(
        self,
        items: Sequence[Any],
        keys: Sequence[Any] | None,
        candidates: Sequence[Candidate],
    ) -> list[list[Any]]:
        chosen = set(healthy_indices(candidates))
        return [list(items) if i in chosen else [] for i in range(len(candidates))]


class KeyHash(Router):
    """Items of one key always go to the same candidate: ``stable_hash(key)`` modulo
    the number of healthy candidates (stable across processes and runs).

    Config: ``seed`` (0) of the hash.
    """

    name = "key-hash"
    keyed = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.seed = int(config.get("seed", 0))
        self._cache: dict[tuple[Any, int], int] = {}

    def _slot(self, key: Any, n: int) -> int:
        try:
            return self._cache[key, n]
        except (KeyError, TypeError):
            pass
        slot = stable_hash(key, self.seed) % n
        if len(self._cache) >= _KEY_CACHE_LIMIT:
            self._cache.clear()
        try:
            self._cache[key, n] = slot
        except TypeError:  # an unhashable key type never gets here: key_bytes raised
            pass
        return slot

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        healthy = healthy_indices(candidates)
        return [healthy[self._slot(request.key, len(healthy))]]

    def partition(
        self,
        items: Sequence[Any],
        keys: Sequence[Any] | None,
        candidates: Sequence[Candidate],
    ) -> list[list[Any]]:
        if keys is None:
            raise ValueError("key-hash routes keyed items: the edge has no key_by")
        healthy = healthy_indices(candidates)
        n = len(healthy)
        out: list[list[Any]] = [[] for _ in candidates]
        if n == 1:
            out[healthy[0]] = list(items)
            return out
        slot = self._slot
        for item, key in zip(items, keys, strict=True):
            out[healthy[slot(key, n)]].append(item)
        return out


class LeastQueue(_WholeBatch):
    """The healthy candidate with the shortest queue (``Candidate.load``); ties go
    in turn. Decides once per micro-batch."""

    name = "least-queue"
    load_aware = True

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        healthy = healthy_indices(candidates)
        least = min(candidates[i].load for i in healthy)
        tied = [i for i in healthy if candidates[i].load == least]
        self._turn += 1
        return [tied[self._turn % len(tied)]]


@hookimpl
def register_routers(register: Any) -> None:
    register("round-robin", RoundRobin, scope="any", description=RoundRobin.__doc__)
    register("broadcast", Broadcast, scope="dataflow", description=Broadcast.__doc__)
    register("key-hash", KeyHash, scope="dataflow", description=KeyHash.__doc__)
    register(
        "least-queue", LeastQueue, scope="dataflow", description=LeastQueue.__doc__
    )
