"""The router interface shared by the dataflow and the LLM control plane.

A router chooses where one item or request goes among candidates: the downstream
replicas of a dataflow edge, or the engines serving a model. It receives the request and
a snapshot of candidate load and returns the chosen candidate indices. Routers are
plugins (``register_routers``); graphs and plans carry router *names* only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Candidate:
    """One target a router may choose.

    Attributes:
        index: position of the candidate in the list handed to the router.
        name: replica id or engine id (stable across calls).
        load: queued + in-flight work (queue depth for replicas, in-flight requests
            for engines).
        capacity: free slots or credits (0 when unknown).
        tokens: in-flight tokens (engines; 0 for replicas).
        healthy: False for engines marked down; routers must not choose those.
        signals: engine-reported and placement figures (engines only): vLLM
            ``/metrics`` gauges (``num_requests_waiting``, ``num_requests_running``,
            ``gpu_cache_usage_perc``) when the router asked for them, and
            ``colocated_inflight`` (requests in flight on other-kind engines that
            share its device) and ``colocated_engines`` (how many such engines).
    """

    index: int
    name: str
    load: float = 0.0
    capacity: float = 0.0
    tokens: float = 0.0
    healthy: bool = True
    signals: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a router may look at.

    Attributes:
        key: the routing key (dataflow ``key_by`` value, or a session id).
        item: the payload (dataflow item or request body); may be None.
        prefix: prompt text for prefix-locality routing (engines).
        tokens: estimated tokens of the request (prompt + output budget).
        headers: request headers (engines), lower-case names.
        kind: the kind of engine the request needs (``"llm"`` or ``"embedding"``;
            None for dataflow items).
    """

    key: Any = None
    item: Any = None
    prefix: str | None = None
    tokens: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    kind: str | None = None


def colocation_signals(beside: Sequence[Any]) -> dict[str, int]:
    """A candidate's ``colocated_inflight`` and ``colocated_engines`` signals from
    the engines of the other kind on its device (objects with ``inflight``)."""
    return {
        "colocated_inflight": sum(e.inflight for e in beside),
        "colocated_engines": len(beside),
    }


class NoCandidateError(LookupError):
    """A router was asked to choose among no (healthy) candidates."""


class Router:
    """Base class of routers.

    Class attributes tell the compiler and runtime what a router needs:
    ``fanout`` (every item goes to every candidate), ``keyed`` (the choice depends on
    ``RouteRequest.key``; the edge must be keyed), ``load_aware`` (reads
    ``Candidate.load``, so callers keep it fresh) and ``engine_metrics`` (reads the
    engines' own ``/metrics`` gauges in ``Candidate.signals``, so the LLM control
    plane polls them).
    """

    name: ClassVar[str] = ""
    fanout: ClassVar[bool] = False
    keyed: ClassVar[bool] = False
    load_aware: ClassVar[bool] = False
    engine_metrics: ClassVar[bool] = False

    def __init__(self, **config: Any) -> None:
        self.config = config

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        """Indices (into ``candidates``) of the chosen target(s); one for most routers,
        all of them for fan-out routers.

        Raises:
            NoCandidateError: ``candidates`` is empty or has no healthy entry.
        """
        raise TypeError(f"{type(self).__name__} must implement route()")

    def partition(
        self,
        items: Sequence[Any],
        keys: Sequence[Any] | None,
        candidates: Sequence[Candidate],
    ) -> list[list[Any]]:
        """Split a micro-batch among candidates (the dataflow's fast path).

        Returns one list per candidate (``out[i]`` goes to ``candidates[i]``), items
        in their input order. The default asks ``route()`` once per item with
        ``RouteRequest(key=keys[i], item=items[i])``; routers override it to decide
        once per batch where that keeps their semantics.

        Raises:
            NoCandidateError: no healthy candidate.
        """
        out: list[list[Any]] = [[] for _ in candidates]
        for i, item in enumerate(items):
            request = RouteRequest(key=keys[i] if keys is not None else None, item=item)
            for chosen in self.route(request, candidates):
                out[chosen].append(item)
        return out


def healthy_indices(candidates: Sequence[Candidate]) -> list[int]:
    """Indices of healthy candidates; raises NoCandidateError when there are none."""
    chosen = [c.index for c in candidates if c.healthy]
    if not chosen:
        raise NoCandidateError(
            f"no healthy candidate among {len(candidates)}"
            + (f": {', '.join(c.name for c in candidates)}" if candidates else "")
        )
    return chosen
