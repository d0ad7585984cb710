"""Routers choosing an engine for a control-plane request.

``least-load``, ``power-of-two``, ``session-affinity`` and ``prefix-hash``. Load is the
engine's in-flight request count, counted at dispatch (``Candidate.load``); in-flight
tokens (``Candidate.tokens``) break ties. Every router skips unhealthy candidates and
raises :class:`~sage_core.routing.NoCandidateError` when none is left. Round-robin is
the shared ``round-robin`` router (scope ``any``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

from sage_core import hookimpl
from sage_core.routing import Candidate, Router, RouteRequest, healthy_indices


def _least(candidates: Sequence[Candidate], indices: Sequence[int], turn: int) -> int:
    """Index with the least (load, tokens); ties rotate with ``turn``."""
    by_index = {c.index: c for c in candidates}
    best = min((by_index[i].load, by_index[i].tokens) for i in indices)
    tied = [i for i in indices if (by_index[i].load, by_index[i].tokens) == best]
    return tied[turn % len(tied)]


def _score(key: str, name: str) -> int:
    """Rendezvous (highest-random-weight) score of ``key`` on candidate ``name``."""
    digest = hashlib.blake2b(f"{key}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class LeastLoad(Router):
    """The healthy engine with the fewest in-flight requests (then tokens)."""

    name = "least-load"
    load_aware = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._turn = 0

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        indices = healthy_indices(candidates)
        self._turn += 1
        return [_least(candidates, indices, self._turn)]


class PowerOfTwo(Router):
    """Two healthy engines sampled at random; the less loaded one wins.

    Config: ``seed`` (None) for a reproducible sampler.
    """

    name = "power-of-two"
    load_aware = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._rng = random.Random(config.get("seed"))

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        indices = healthy_indices(candidates)
        if len(indices) == 1:
            return indices
        pair = self._rng.sample(indices, 2)
        return [_least(candidates, pair, 0)]


class SessionAffinity(Router):
    """The same session key always goes to the same healthy engine.

    The key is the header named by ``header`` (default ``x-session-id``), else
    ``RouteRequest.key``, else the ``user`` field of the body. Rendezvous hashing keeps
    keys in place when another engine joins or leaves: only keys of the engine that
    left move. Requests without a key go to the least-loaded engine.
    """

    name = "session-affinity"
    keyed = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.header = str(config.get("header", "x-session-id")).lower()

    def session_key(self, request: RouteRequest) -> str | None:
        value = request.headers.get(self.header)
        if value:
            return value
        if request.key is not None:
            return str(request.key)
        item = request.item
        if isinstance(item, dict) and isinstance(item.get("user"), str):
            return str(item["user"])
        return None

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        indices = healthy_indices(candidates)
        key = self.session_key(request)
        if key is None:
            return [_least(candidates, indices, 0)]
        by_index = {c.index: c for c in candidates}
        return [max(indices, key=lambda i: _score(key, by_index[i].name))]


class PrefixHash(Router):
    """Prompt-prefix locality blended with load (bounded-load consistent hashing).

    The first ``prefix_chars`` characters of the prompt pick a preferred engine by
    rendezvous hashing, so requests sharing a prefix reuse that engine's prefix
    cache. If the preferred engine carries more than ``bound`` requests above the
    least-loaded healthy engine, the next engine in the key's rendezvous order within
    the bound is taken instead: a hot prefix spills over instead of piling onto one
    engine. Invariant: the chosen engine's load is at most least load + ``bound``.

    Config: ``prefix_chars`` (256), ``bound`` (2).
    """

    name = "prefix-hash"
    load_aware = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.prefix_chars = int(config.get("prefix_chars", 256))
        self.bound = float(config.get("bound", 2))
        if self.prefix_chars < 1 or self.bound < 0:
            raise ValueError("prefix-hash: prefix_chars must be >= 1 and bound >= 0")

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        indices = healthy_indices(candidates)
        by_index = {c.index: c for c in candidates}
        if not request.prefix:
            return [_least(candidates, indices, 0)]
        key = request.prefix[: self.prefix_chars]
        least = min(by_index[i].load for i in indices)
        ranked = sorted(
            indices, key=lambda i: _score(key, by_index[i].name), reverse=True
        )
        # the least-loaded engine is always within the bound, so next() finds one
        return [next(i for i in ranked if by_index[i].load <= least + self.bound)]


class KvAware(Router):
    """The engine that reports the least queueing and KV-cache pressure.

    Reads the engines' own vLLM ``/metrics`` gauges (``engine_metrics``: the control
    plane polls them): score = ``waiting_weight`` x requests waiting + ``kv_weight`` x
    KV-cache usage (0..1) + requests in flight counted by the gateway. An engine
    without ``/metrics`` scores on the gateway's count alone.

    Config: ``waiting_weight`` (2), ``kv_weight`` (8).
    """

    name = "kv-aware"
    load_aware = True
    engine_metrics = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.waiting_weight = float(config.get("waiting_weight", 2))
        self.kv_weight = float(config.get("kv_weight", 8))
        self._turn = 0

    def score(self, candidate: Candidate) -> float:
        sig = candidate.signals
        return (
            self.waiting_weight * sig.get("num_requests_waiting", 0.0)
            + self.kv_weight * sig.get("gpu_cache_usage_perc", 0.0)
            + candidate.load
        )

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        indices = healthy_indices(candidates)
        by_index = {c.index: c for c in candidates}
        best = min(self.score(by_index[i]) for i in indices)
        tied = [i for i in indices if self.score(by_index[i]) <= best + 1e-9]
        self._turn += 1
        return [tied[self._turn % len(tied)]]


class InterferenceAware(KvAware):
    """``kv-aware`` plus placement: work of the other kind in flight on the same
    device (``colocated_inflight``, from the engines' ``device`` labels) counts
    ``colocated_weight`` per request, so LLM requests go where no embedding batch
    runs and embedding batches where the fewest generations compete.

    Config: ``colocated_weight`` (2), plus ``kv-aware``'s.
    """

    name = "interference-aware"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.colocated_weight = float(config.get("colocated_weight", 2))

    def score(self, candidate: Candidate) -> float:
        colocated = candidate.signals.get("colocated_inflight", 0.0)
        return super().score(candidate) + self.colocated_weight * colocated


class DevicePacking(Router):
    """Generations packed onto the fewest devices, embeddings where they finish first.

    For engines that share devices with engines of the other kind
    (``colocated_engines``, from their ``device`` labels): each LLM request goes to
    the busiest LLM engine with fewer than ``pack_limit`` requests in flight (the
    first engine when all are idle; the least loaded when all are at the limit), and
    each embedding batch to the engine where it would finish first: the batches in
    flight on it plus itself, at half speed where generations are in flight beside
    it. On devices that time-slice co-located engines, an LLM engine with nothing in
    flight leaves its device whole to the embedding engine beside it, where
    spreading the generations would leave every embedding engine half a device;
    decode steps grow little with their batch, so the packed generations lose little
    (their tail grows: the gateway's benchmark measured LLM p99 up to 2x). Where no
    engine shares its device with the other kind, it is ``least-load``.

    Config: ``pack_limit`` (64 requests in flight per LLM engine: on the H100
    profile a decode step of 64 sequences is 1.3x that of one).
    """

    name = "device-packing"
    load_aware = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.pack_limit = int(config.get("pack_limit", 64))
        if self.pack_limit < 1:
            raise ValueError("device-packing: pack_limit must be >= 1")
        self._turn = 0

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        indices = healthy_indices(candidates)
        by_index = {c.index: c for c in candidates}
        self._turn += 1
        if any(by_index[i].signals.get("colocated_engines", 0) for i in indices):
            if request.kind == "embedding":
                return [min(indices, key=lambda i: self._finish(by_index[i]))]
            room = [i for i in indices if by_index[i].load < self.pack_limit]
            if request.kind == "llm" and room:
                return [max(room, key=lambda i: (by_index[i].load, -i))]
        return [_least(candidates, indices, self._turn)]

    @staticmethod
    def _finish(candidate: Candidate) -> tuple[float, float]:
        """How long a batch sent to an embedding engine waits and runs, in units of
        one batch on a whole device: the engine's batches in flight and this one, at
        half speed while generations beside it hold every other time slice."""
        busy = candidate.signals.get("colocated_inflight", 0.0) > 0
        return (candidate.load + 1) * (2.0 if busy else 1.0), candidate.load


ROUTERS = (
    LeastLoad,
    PowerOfTwo,
    SessionAffinity,
    PrefixHash,
    KvAware,
    InterferenceAware,
    DevicePacking,
)


@hookimpl
def register_routers(register: Any) -> None:
    for router in ROUTERS:
        register(
            router.name,
            router,
            scope="requests",
            description=(router.__doc__ or "").strip().splitlines()[0],
        )
