"""Request policies of the LLM control plane: fifo, priority, slo-aware and hybrid.

Pure classes over :mod:`sage_core.llm.scheduling`; registered by
``sage_plugins.request_policies`` (hook ``register_request_policies``).
"""

from __future__ import annotations

import json
import math
from collections import deque
from typing import TYPE_CHECKING, Any

from sage_core.llm.scheduling import DispatchView, KeyedPolicy, _PoolHeap

if TYPE_CHECKING:
    from sage_core.llm.classify import LLMRequest


class FifoPolicy(KeyedPolicy):
    """First come, first served across all pools with a free engine slot."""

    name = "fifo"

    def key(self, request: LLMRequest) -> Any:
        return request.seq


class PriorityPolicy(KeyedPolicy):
    """Highest ``priority`` first; arrival order within one priority."""

    name = "priority"

    def key(self, request: LLMRequest) -> Any:
        return (-request.priority, request.seq)


class SloAwarePolicy(KeyedPolicy):
    """Earliest deadline first, with urgency.

    The key is the request's deadline, pulled ``urgency_ms`` earlier per priority
    level; requests without a deadline get ``default_slo_ms``. A request whose deadline
    has already passed when it reaches the head is demoted to a late queue (arrival
    order) served only when no on-time request is ready: under overload this keeps
    capacity for requests that can still meet their objective instead of letting
    earliest-deadline-first collapse.

    Config:
        default_slo_ms: objective assumed without a header/body deadline (30000).
        urgency_ms: how much earlier one priority level pulls the key (0).
    """

    name = "slo-aware"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.default_slo_s = float(config.get("default_slo_ms", 30_000)) / 1000.0
        self.urgency_s = float(config.get("urgency_ms", 0)) / 1000.0
        self._late: dict[str, _PoolHeap] = {}
        self._late_where: dict[int, str] = {}

    def key(self, request: LLMRequest) -> Any:
        deadline = request.deadline
        if math.isinf(deadline):
            deadline = request.arrival + self.default_slo_s
        return (deadline - self.urgency_s * request.priority, request.seq)

    def _demote_late(self, now: float) -> None:
        for pool, heap in self._pools.items():
            while True:
                head = heap.peek()
                if head is None or head[1].deadline >= now:
                    break
                request = self.take(pool)
                late = self._late.get(pool)
                if late is None:
                    late = self._late[pool] = _PoolHeap()
                late.push(request.seq, request)
                self._late_where[request.seq] = pool

    def pop_llm(self, view: DispatchView) -> list[LLMRequest] | None:
        self._demote_late(view.now)
        pool = self.best(view)
        if pool is not None:
            return [self.take(pool)]
        for pool, late in self._late.items():
            if late.live and view.ready(pool):
                request = late.pop()
                del self._late_where[request.seq]
                return [request]
        return None

    def pop(self, view: DispatchView) -> list[LLMRequest] | None:
        return self.pop_llm(view)

    def remove(self, request: LLMRequest) -> bool:
        pool = self._late_where.pop(request.seq, None)
        if pool is not None:
            self._late[pool].kill(request)
            return True
        return super().remove(request)

    def requests(self) -> list[LLMRequest]:
        late = [r for heap in self._late.values() for r in heap.items()]
        return sorted([*super().requests(), *late], key=lambda r: r.seq)

    def __len__(self) -> int:
        return super().__len__() + len(self._late_where)


def _batch_key(request: LLMRequest) -> tuple[str, str]:
    """Requests that may share one engine call: same pool, same parameters, same
    input type (text or token ids)."""
    params = {k: v for k, v in request.body.items() if k != "input"}
    first = request.body.get("input")
    if isinstance(first, list) and first:
        first = first[0]
    params["\x00text"] = isinstance(first, str)
    return request.pool, json.dumps(params, sort_keys=True, default=str)


class HybridPolicy(SloAwarePolicy):
    """LLM and embedding traffic scheduled jointly.

    Embedding requests are batched per (model, parameters): a batch leaves when it
    holds ``max_batch`` inputs, when its oldest request has waited ``max_wait_ms``, or
    at once when no batch of that pool is in flight (an idle engine never waits).
    Batches go before LLM requests (they are short and would otherwise queue behind
    long generations). LLM requests are ordered by deadline as in ``slo-aware``.
    With ``llm_cap_when_mixed`` set, at most that many LLM requests are in flight
    while embedding work is queued or running — on engines that share hardware this
    keeps generation off the embedding requests' critical path and vice versa.

    Config: ``max_batch`` (32 inputs), ``max_wait_ms`` (5), ``llm_cap_when_mixed``
    (None), plus ``slo-aware``'s.
    """

    name = "hybrid"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.max_batch = int(config.get("max_batch", 32))
        self.max_wait_s = float(config.get("max_wait_ms", 5)) / 1000.0
        cap = config.get("llm_cap_when_mixed")
        self.llm_cap = None if cap is None else int(cap)
        if self.max_batch < 1 or not 0 <= self.max_wait_s <= 60:
            raise ValueError(
                "hybrid: max_batch must be >= 1 and max_wait_ms within 0..60000"
            )
        if self.llm_cap is not None and self.llm_cap < 1:
            raise ValueError("hybrid: llm_cap_when_mixed must be >= 1 (or null)")
        self._emb: dict[tuple[str, str], deque[LLMRequest]] = {}
        self._emb_count = 0

    def push(self, request: LLMRequest) -> None:
        if request.kind != "embedding":
            super().push(request)
            return
        key = _batch_key(request)
        queue = self._emb.get(key)
        if queue is None:
            queue = self._emb[key] = deque()
        queue.append(request)
        self._emb_count += 1

    def _take_batch(self, key: tuple[str, str]) -> list[LLMRequest]:
        queue = self._emb[key]
        batch = [queue.popleft()]
        size = batch[0].size
        while queue and size + queue[0].size <= self.max_batch:
            size += queue[0].size
            batch.append(queue.popleft())
        if not queue:
            del self._emb[key]
        self._emb_count -= len(batch)
        return batch

    def emb_ready(self, view: DispatchView, pool: str) -> bool:
        """May an embedding batch of ``pool`` leave now (a free engine slot)?"""
        return view.ready(pool)

    def pop(self, view: DispatchView) -> list[LLMRequest] | None:
        now = view.now
        due: list[tuple[float, tuple[str, str]]] = []
        for key, queue in self._emb.items():
            pool = key[0]
            if not self.emb_ready(view, pool):
                continue
            size = sum(r.size for r in queue)
            if (
                size >= self.max_batch
                or now - queue[0].arrival >= self.max_wait_s
                or view.inflight(pool) == 0
            ):
                due.append((queue[0].arrival, key))
        if due:
            return self._take_batch(min(due)[1])
        if (
            self.llm_cap is not None
            and (self._emb_count or view.inflight_kind("embedding"))
            and view.inflight_kind("llm") >= self.llm_cap
        ):
            return None
        return self.pop_llm(view)

    def wake_after(self, now: float) -> float | None:
        """Time until the next batch's wait bound runs out. Batches already due wait
        only for an engine slot, and a freed slot wakes the plane by itself."""
        pending = [
            queue[0].arrival + self.max_wait_s - now
            for queue in self._emb.values()
            if queue[0].arrival + self.max_wait_s > now
        ]
        return min(pending) if pending else None

    def remove(self, request: LLMRequest) -> bool:
        if request.kind != "embedding":
            return super().remove(request)
        key = _batch_key(request)
        queue = self._emb.get(key)
        if queue is None or request not in queue:
            return False
        queue.remove(request)
        if not queue:
            del self._emb[key]
        self._emb_count -= 1
        return True

    def requests(self) -> list[LLMRequest]:
        emb = [r for queue in self._emb.values() for r in queue]
        return sorted([*super().requests(), *emb], key=lambda r: r.seq)

    def __len__(self) -> int:
        return super().__len__() + self._emb_count


POLICIES = (FifoPolicy, PriorityPolicy, SloAwarePolicy, HybridPolicy)
"""The built-in policies of this module (``interference.py`` adds its own)."""
