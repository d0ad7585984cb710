"""The control plane's decision log: what was dispatched where and when, for replay.

``sage gateway --record-decisions PATH`` (config key ``decision_log``) appends JSON
lines to PATH:

* ``{"event": "start", "policy", "policy_config", "routers", "router_config",
  "engines": [{"id", "kind", "models", "max_inflight", "device"}]}`` once, when the
  gateway starts (times below are seconds after it);
* ``{"event": "dispatch", "t", "engine", "queued", "requests": [{"id", "kind",
  "model", "priority", "slo_ms", "arrival", "tokens", "size"}]}`` per engine call
  (one request, or an embedding batch), ``queued`` the requests left waiting;
* ``{"event": "done", "t", "id", "status"}`` per request that left the gateway;
* ``{"event": "policy", "t", "policy", "policy_config"}`` when the request policy is
  switched at run time;
* ``{"event": "policy-event", "t", "policy", "decision", ...}`` for the decisions a
  policy reports beyond releasing requests (``RequestPolicy.take_events``: the
  ``adaptive`` policy's switches, why a ``cost-optimized`` batch left).

``sage explain --dispatch-log PATH --replay POLICY`` reads it
(``sage_core.diagnosis.dispatch``). Prompts and bodies are never written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sage_core.llm.classify import LLMRequest
    from sage_core.llm.config import GatewayConfig
    from sage_core.llm.registry import Engine


def request_fields(request: LLMRequest, t0: float) -> dict[str, Any]:
    """What the log keeps of a request (no prompt, no body)."""
    return {
        "id": request.id,
        "kind": request.kind,
        "model": request.model,
        "priority": request.priority,
        "slo_ms": request.slo_ms,
        "arrival": round(request.arrival - t0, 6),
        "tokens": request.tokens,
        "size": request.size,
    }


class DecisionLog:
    """Appends the decision log of one gateway run (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.t0 = time.monotonic()
        self._file: IO[str] | None = None

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def _t(self, now: float | None = None) -> float:
        return round((time.monotonic() if now is None else now) - self.t0, 6)

    def start(self, config: GatewayConfig, engines: list[Engine]) -> None:
        self._write(
            {
                "event": "start",
                "policy": config.policy,
                "policy_config": dict(config.policy_config),
                "routers": {
                    "llm": config.router,
                    "embedding": config.embedding_router or config.router,
                },
                "router_config": dict(config.router_config),
                "engines": [
                    {
                        "id": e.id,
                        "kind": e.kind,
                        "models": list(e.models or e.spec.models),
                        "max_inflight": e.spec.max_inflight,
                        "device": e.spec.device,
                    }
                    for e in engines
                ],
            }
        )

    def dispatch(
        self, batch: list[LLMRequest], engine: Engine, queued: int, now: float
    ) -> None:
        self._write(
            {
                "event": "dispatch",
                "t": self._t(now),
                "engine": engine.id,
                "queued": queued,
                "requests": [request_fields(r, self.t0) for r in batch],
            }
        )

    def policy(self, name: str, config: dict[str, Any] | None) -> None:
        """The request policy was switched at run time (``PUT /admin/policy``)."""
        self._write(
            {
                "event": "policy",
                "t": self._t(),
                "policy": name,
                "policy_config": dict(config or {}),
            }
        )

    def policy_event(self, record: dict[str, Any], now: float) -> None:
        """A decision the request policy reported (``take_events``)."""
        self._write({"event": "policy-event", "t": self._t(now), **record})

    def done(self, request: LLMRequest, status: str) -> None:
        self._write(
            {"event": "done", "t": self._t(), "id": request.id, "status": status}
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
