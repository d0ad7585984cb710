"""The ``adaptive`` request policy: another policy per observed load regime.

It serves through one inner policy at a time and, every ``window_ms``, classifies
what the window showed:

* ``overload``: at least ``late_share`` of the requests with an objective that
  finished in the window, or that it released, were past their deadline (requests
  may queue in the engines rather than here, so lateness is counted where they
  finish too): ``slo-aware`` by default, whose late queue keeps the engines for
  requests that can still meet their objective;
* ``mixed``: embedding requests queued (at least ``batch_queue`` on average over
  the window): ``hybrid`` by default, which merges them
  into batches;
* ``light``: neither: ``priority`` by default, which releases every request at once.

A regime must hold for ``confirm`` windows in a row before the policy switches;
queued requests then move to the new policy in arrival order (as ``PUT
/admin/policy`` moves them), and each inner policy is kept, with what it learned,
for when its regime returns. Every switch is a decision record (``take_events``:
the gateway's decision log writes it as a ``policy-event``; ``GET /admin/policy``
lists the recent ones), with the window's figures that made it.

Config: ``policies`` (regime -> policy name), ``policy_configs`` (regime -> config),
``window_ms`` (500), ``confirm`` (2), ``late_share`` (0.05), ``batch_queue`` (4).
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from sage_core.llm.scheduling import RequestPolicy

if TYPE_CHECKING:
    from sage_core.llm.classify import LLMRequest
    from sage_core.llm.scheduling import DispatchView

REGIMES = ("light", "mixed", "overload")
DEFAULTS = {"light": "priority", "mixed": "hybrid", "overload": "slo-aware"}


class _Window:
    """What one window saw: releases, late ones, and the embedding requests queued
    over time (held between the plane's calls, which follow every arrival)."""

    __slots__ = (
        "area",
        "done",
        "last",
        "late",
        "missed",
        "queued",
        "released",
        "start",
    )

    def __init__(self, start: float, queued: int) -> None:
        self.start = self.last = start
        self.queued = queued
        self.released = self.late = self.done = self.missed = 0
        self.area = 0.0

    def held(self, now: float, queued: int) -> None:
        """``queued`` embedding requests wait from ``now`` on."""
        self.area += self.queued * max(0.0, now - self.last)
        self.last, self.queued = now, queued

    def regime(
        self, now: float, late_share: float, batch_queue: float
    ) -> tuple[str, dict[str, Any]]:
        self.held(now, self.queued)
        span = now - self.start
        late = max(
            self.late / self.released if self.released else 0.0,
            self.missed / self.done if self.done else 0.0,
        )
        queued = self.area / span if span > 0 else 0.0
        figures = {
            "released": self.released,
            "finished": self.done,
            "late_share": round(late, 4),
            "embedding_queued": round(queued, 2),
        }
        if late >= late_share:
            return "overload", figures
        if queued >= batch_queue:
            return "mixed", figures
        return "light", figures


class AdaptivePolicy(RequestPolicy):
    """Switches between request policies by the load it observes."""

    name = "adaptive"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        from sage_core.llm.plane import make_policy  # the plugin registry, lazily

        names = {**DEFAULTS, **dict(config.get("policies") or {})}
        configs = dict(config.get("policy_configs") or {})
        unknown = (set(names) | set(configs)) - set(REGIMES)
        if unknown:
            raise ValueError(f"adaptive: unknown regimes {sorted(unknown)}: {REGIMES}")
        self.window_s = float(config.get("window_ms", 500)) / 1000.0
        self.confirm = int(config.get("confirm", 2))
        self.late_share = float(config.get("late_share", 0.05))
        self.batch_queue = float(config.get("batch_queue", 4))
        if self.window_s <= 0 or self.confirm < 1 or not 0 < self.late_share <= 1:
            raise ValueError(
                "adaptive: window_ms > 0, confirm >= 1 and 0 < late_share <= 1 "
                "are required"
            )
        self.inner: dict[str, RequestPolicy] = {}
        for regime in REGIMES:
            name = names[regime]
            if name == self.name:
                raise ValueError("adaptive: an inner policy cannot be adaptive")
            try:
                self.inner[regime] = make_policy(name, configs.get(regime))
            except Exception as exc:  # noqa: BLE001 - unknown name or bad config
                raise ValueError(f"adaptive: {regime} policy: {exc}") from None
        self.regime = "light"
        self._pending: tuple[str, int] = ("light", 0)
        self._window: _Window | None = None
        self.switches: deque[dict[str, Any]] = deque(maxlen=20)
        self._emb_queued = 0  # embedding requests queued (any inner policy)

    @property
    def active(self) -> RequestPolicy:
        return self.inner[self.regime]

    def push(self, request: LLMRequest) -> None:
        self.active.push(request)
        self._emb_queued += request.kind == "embedding"

    def pop(self, view: DispatchView) -> list[LLMRequest] | None:
        now = view.now
        self._roll(now)
        window = self._window
        assert window is not None
        batch = self.active.pop(view)
        if batch:
            window.released += len(batch)
            window.late += sum(1 for r in batch if r.deadline < now)
            self._emb_queued -= sum(1 for r in batch if r.kind == "embedding")
        window.held(now, self._emb_queued)
        return batch

    def _roll(self, now: float) -> None:
        """Close the window once ``window_ms`` have passed, and switch if due."""
        if self._window is None:
            self._window = _Window(now, self._emb_queued)
            return
        if now - self._window.start < self.window_s:
            return
        seen, figures = self._window.regime(now, self.late_share, self.batch_queue)
        self._window = _Window(now, self._emb_queued)
        if seen == self.regime:
            self._pending = (seen, 0)
            return
        count = self._pending[1] + 1 if self._pending[0] == seen else 1
        self._pending = (seen, count)
        if count >= self.confirm:
            self._switch(seen, figures, now)

    def _switch(self, regime: str, figures: dict[str, Any], now: float) -> None:
        old, new = self.active, self.inner[regime]
        for request in old.requests():
            old.remove(request)
            new.push(request)
        record = {
            "policy": self.name,
            "decision": "switch",
            "from": old.name,
            "to": new.name,
            "regime": regime,
            "window": figures,
            "moved": len(new),
        }
        self.regime, self._pending = regime, (regime, 0)
        self.record_event(record)
        self.switches.append({"at": now, **record})

    def remove(self, request: LLMRequest) -> bool:
        if not self.active.remove(request):
            return False
        self._emb_queued -= request.kind == "embedding"
        return True

    def requests(self) -> list[LLMRequest]:
        return self.active.requests()

    def __len__(self) -> int:
        return len(self.active)

    def wake_after(self, now: float) -> float | None:
        return self.active.wake_after(now)

    def observe(self, batch: list[LLMRequest], seconds: float) -> None:
        for policy in self.inner.values():
            policy.observe(batch, seconds)

    def finished(self, request: LLMRequest, status: str, now: float) -> None:
        window = self._window
        if window is not None and request.deadline != math.inf:
            window.done += 1
            window.missed += status != "ok" or now > request.deadline
        for policy in self.inner.values():
            policy.finished(request, status, now)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["active"] = {"regime": self.regime, "policy": self.active.describe()}
        out["switches"] = list(self.switches)
        return out
