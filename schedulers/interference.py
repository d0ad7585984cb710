"""The ``interference-aware`` request policy: joint LLM + embedding scheduling for
engines that share devices.

On a device shared by an LLM engine and an embedding engine whose steps take turns
whole (no preemption, or slices long against an embedding batch), an embedding batch
that arrives while the LLM engine runs a long prefill step waits for the whole step.
This policy, over ``hybrid``:

* paces prefill-heavy LLM requests (``heavy_prefill_tokens`` or more estimated
  tokens) while embedding work is queued or in flight and every LLM engine with a
  free slot shares its device with it (``DispatchView.ready_apart``): at most one per
  ``pace_ms`` per LLM engine, so the engines' steps stay short instead of packing a
  burst of prompts into one long prefill step in front of latency-critical embedding
  batches. A held request goes anyway after ``hold_max_ms``, or when its deadline is
  within ``slack_ms`` (LLM SLO pressure);
* sizes embedding batches from their measured cost g(inputs) = fixed + per_input x n
  (:class:`BatchCost`, fitted online from the gateway's own timings): a batch waits
  for more inputs at most the fixed cost it amortises (bounded by ``max_wait_ms``),
  and holds at most as many inputs as their per-input cost fits in
  ``batch_budget_ms``; and keeps at most
  ``engine_depth`` batches in flight per embedding engine, so an engine never packs
  a deep queue into one long device step that would stall its co-located LLM
  engine (and the embeddings behind it): the rest waits here, where it is merged.

Config: ``heavy_prefill_tokens`` (256), ``pace_ms`` (25), ``hold_max_ms`` (200),
``slack_ms`` (1000), ``engine_depth`` (None: no bound beyond the engine's
``max_inflight``; the emulated benchmark measured a bound of 2 as harmful),
``batch_budget_ms`` (100), ``adaptive`` (true), plus ``hybrid``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from schedulers.requests import HybridPolicy

if TYPE_CHECKING:
    from sage_core.llm.classify import LLMRequest
    from sage_core.llm.scheduling import DispatchView


class BatchCost:
    """Least-squares fit of seconds = fixed + per_input x inputs, with exponential
    forgetting (``decay`` per observation) so it follows a changing device load."""

    def __init__(self, decay: float = 0.98) -> None:
        self.decay = decay
        self.n = self.sx = self.sy = self.sxx = self.sxy = 0.0

    def observe(self, inputs: int, seconds: float) -> None:
        d = self.decay
        self.n = self.n * d + 1
        self.sx = self.sx * d + inputs
        self.sy = self.sy * d + seconds
        self.sxx = self.sxx * d + inputs * inputs
        self.sxy = self.sxy * d + inputs * seconds

    def fit(self) -> tuple[float, float] | None:
        """(fixed s, per-input s), or None before two observations."""
        if self.n < 1.5:
            return None
        var = self.sxx * self.n - self.sx * self.sx
        if var <= 1e-9 * max(1.0, self.sxx * self.n):
            return max(0.0, self.sy / self.n), 0.0
        slope = max(0.0, (self.sxy * self.n - self.sx * self.sy) / var)
        fixed = max(0.0, (self.sy - slope * self.sx) / self.n)
        return fixed, slope


class InterferenceAwarePolicy(HybridPolicy):
    """Hybrid scheduling that keeps long LLM prefills off devices busy with embedding
    batches, and sizes embedding batches from their measured cost."""

    name = "interference-aware"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.heavy = int(config.get("heavy_prefill_tokens", 256))
        self.pace_s = float(config.get("pace_ms", 25)) / 1000.0
        self.hold_max_s = float(config.get("hold_max_ms", 200)) / 1000.0
        self.slack_s = float(config.get("slack_ms", 1000)) / 1000.0
        self.budget_s = float(config.get("batch_budget_ms", 100)) / 1000.0
        self.adaptive = bool(config.get("adaptive", True))
        depth = config.get("engine_depth")
        self.depth = None if depth is None else int(depth)
        if (
            self.heavy < 1
            or self.hold_max_s < 0
            or self.budget_s <= 0
            or (self.depth is not None and self.depth < 1)
        ):
            raise ValueError(
                "interference-aware: heavy_prefill_tokens >= 1, hold_max_ms >= 0, "
                "batch_budget_ms > 0 and engine_depth >= 1 are required"
            )
        self.cost = BatchCost()
        self._cap_wait = self.max_wait_s
        self._cap_batch = self.max_batch
        self._held_since: float | None = None
        self._last_heavy = float("-inf")
        self._pace_now = self.pace_s

    def observe(self, batch: list[LLMRequest], seconds: float) -> None:
        self.cost.observe(sum(r.size for r in batch), seconds)
        fit = self.cost.fit() if self.adaptive else None
        if fit is None:
            return
        fixed, per_input = fit
        self.max_wait_s = min(self._cap_wait, fixed)
        # the fixed part also holds the time spent queued behind co-located work, so
        # the budget bounds only the part that grows with the batch
        room = self.budget_s / per_input if per_input > 0 else self._cap_batch
        self.max_batch = max(1, min(self._cap_batch, int(room)))

    def emb_ready(self, view: DispatchView, pool: str) -> bool:
        if self.depth is None:
            return view.ready(pool)
        depth = self.depth * max(1, view.engines(pool))
        return view.ready(pool) and view.inflight(pool) < depth

    def _holds(self, request: LLMRequest, view: DispatchView) -> bool:
        if request.tokens < self.heavy:
            return False
        now = view.now
        if not (self._emb_count or view.inflight_kind("embedding")):
            return False
        if view.ready_apart(request.pool):
            return False
        self._pace_now = self.pace_s / max(1, view.engines(request.pool))
        if now - self._last_heavy >= self._pace_now:
            return False
        if now - request.arrival >= self.hold_max_s:
            return False
        return request.deadline - now > self.slack_s

    def pop_llm(self, view: DispatchView) -> list[LLMRequest] | None:
        self._demote_late(view.now)
        pool = self.best(view)
        if pool is not None:
            head = self._pools[pool].peek()
            assert head is not None
            if self._holds(head[1], view):
                self._held_since = head[1].arrival
                return None
            self._held_since = None
            if head[1].tokens >= self.heavy:
                self._last_heavy = view.now
            return [self.take(pool)]
        self._held_since = None
        return super().pop_llm(view)

    def wake_after(self, now: float) -> float | None:
        wait = super().wake_after(now)
        if self._held_since is not None:
            held = min(
                self._held_since + self.hold_max_s - now,
                self._last_heavy + self._pace_now - now,
            )
            held = max(0.0005, held)
            wait = held if wait is None else min(wait, held)
        return wait

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        fit = self.cost.fit()
        out["learned"] = {
            "max_wait_ms": self.max_wait_s * 1000.0,
            "max_batch": self.max_batch,
            "batch_fixed_ms": None if fit is None else fit[0] * 1000.0,
            "batch_per_input_ms": None if fit is None else fit[1] * 1000.0,
        }
        return out
