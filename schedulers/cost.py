"""The ``cost-optimized`` request policy: the fewest engine calls that still meet
each request's objective.

Every engine call has a fixed cost (a step's launch, weights read once per batch)
that a fuller batch amortises, so engine-seconds per request fall as batches grow.
Where ``hybrid`` starts a partial embedding batch as soon as an engine is idle,
this policy holds it while its requests have slack: a batch leaves when it holds
``max_batch`` inputs, when one of its requests has spent ``hold_share`` of its slack
waiting (the slack: its objective less the batch's predicted time, g(inputs) =
fixed + per_input x inputs fitted online from the gateway's own timings
(:class:`~schedulers.interference.BatchCost`; ``initial_batch_ms`` before two
timings), less ``margin_ms``; the rest of the slack absorbs the queueing a burst
adds), or when its oldest request has waited ``max_wait_ms``. Requests without
an objective get ``default_slo_ms`` (``slo-aware``'s), so they wait up to
``max_wait_ms``. LLM requests go in deadline order as in ``slo-aware``: engines
batch generations continuously themselves.

The price is latency at light load (a lone request waits for company as long as
its slack allows); the gain is engine time: ``describe()`` reports calls, inputs,
inputs per call and the fixed engine-seconds saved against one call per request.
Every release is a decision record (``take_events``: why it left, how long its
oldest request was held, the predicted batch time).

Config: ``max_batch`` (64 inputs), ``max_wait_ms`` (50), ``margin_ms`` (10),
``hold_share`` (0.5), ``initial_batch_ms`` (20), plus ``slo-aware``'s.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from schedulers.interference import BatchCost
from schedulers.requests import HybridPolicy

if TYPE_CHECKING:
    from sage_core.llm.classify import LLMRequest
    from sage_core.llm.scheduling import DispatchView


class CostOptimizedPolicy(HybridPolicy):
    """Embedding batches held while their requests have slack, to fill them."""

    name = "cost-optimized"

    def __init__(self, **config: Any) -> None:
        config.setdefault("max_batch", 64)
        config.setdefault("max_wait_ms", 50)
        super().__init__(**config)
        self.margin_s = float(config.get("margin_ms", 10)) / 1000.0
        self.initial_s = float(config.get("initial_batch_ms", 20)) / 1000.0
        self.hold_share = float(config.get("hold_share", 0.5))
        if self.margin_s < 0 or self.initial_s < 0 or not 0 <= self.hold_share <= 1:
            raise ValueError(
                "cost-optimized: margin_ms and initial_batch_ms >= 0, "
                "0 <= hold_share <= 1"
            )
        self.cost = BatchCost()
        self.calls = self.inputs = self.requests_sent = 0
        self.reasons: Counter[str] = Counter()

    def predict_s(self, inputs: int) -> float:
        """Predicted seconds of one engine call of ``inputs`` inputs."""
        fit = self.cost.fit()
        if fit is None:
            return self.initial_s
        return fit[0] + fit[1] * inputs

    def observe(self, batch: list[LLMRequest], seconds: float) -> None:
        self.cost.observe(sum(r.size for r in batch), seconds)

    def _deadline(self, request: LLMRequest) -> float:
        if math.isinf(request.deadline):
            return request.arrival + self.default_slo_s
        return request.deadline

    def _leaves_at(self, queue: deque[LLMRequest]) -> tuple[float, str]:
        """When the batch at the head of ``queue`` must leave, and why."""
        size = min(self.max_batch, sum(r.size for r in queue))
        cost = self.predict_s(size) + self.margin_s
        by_slo = min(
            r.arrival + self.hold_share * max(0.0, self._deadline(r) - r.arrival - cost)
            for r in queue
        )
        by_wait = queue[0].arrival + self.max_wait_s
        return (by_slo, "deadline") if by_slo < by_wait else (by_wait, "max-wait")

    def pop(self, view: DispatchView) -> list[LLMRequest] | None:
        now = view.now
        due: list[tuple[float, tuple[str, str], str]] = []
        for key, queue in self._emb.items():
            if not self.emb_ready(view, key[0]):
                continue
            if sum(r.size for r in queue) >= self.max_batch:
                due.append((queue[0].arrival, key, "full"))
                continue
            at, why = self._leaves_at(queue)
            if now >= at:
                due.append((queue[0].arrival, key, why))
        if due:
            _, key, why = min(due)
            held = now - self._emb[key][0].arrival
            batch = self._take_batch(key)
            self._released(batch, why, held)
            return batch
        return self.pop_llm(view)

    def _released(self, batch: list[LLMRequest], why: str, held: float) -> None:
        inputs = sum(r.size for r in batch)
        self.calls += 1
        self.inputs += inputs
        self.requests_sent += len(batch)
        self.reasons[why] += 1
        self.record_event(
            {
                "policy": self.name,
                "decision": "release",
                "reason": why,
                "inputs": inputs,
                "requests": len(batch),
                "held_ms": round(held * 1000.0, 3),
                "predicted_ms": round(self.predict_s(inputs) * 1000.0, 3),
            }
        )

    def wake_after(self, now: float) -> float | None:
        """Time until the next held batch must leave."""
        times = [self._leaves_at(q)[0] - now for q in self._emb.values()]
        return max(0.0005, min(times)) if times else None

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        fit = self.cost.fit()
        fixed = self.initial_s if fit is None else fit[0]
        out["learned"] = {
            "batch_fixed_ms": None if fit is None else fit[0] * 1000.0,
            "batch_per_input_ms": None if fit is None else fit[1] * 1000.0,
            "calls": self.calls,
            "inputs": self.inputs,
            "inputs_per_call": self.inputs / self.calls if self.calls else None,
            "released_because": dict(self.reasons),
            # one call per request would have paid the fixed cost this many more times
            "fixed_s_saved": fixed * (self.requests_sent - self.calls),
        }
        return out
