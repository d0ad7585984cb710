"""Reading a gateway's decision log (``sage_core.llm.decisions``) for replay.

The served requests by id (with their last dispatch and when they finished) and the
recorded decisions in order; see ``sage_core.diagnosis.dispatch``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_core.diagnosis.model import DiagnosisError


@dataclass(slots=True)
class Logged:
    """One served request as the log recorded it (times in seconds after start)."""

    id: str
    kind: str
    model: str
    priority: int
    slo_ms: float | None
    arrival: float
    tokens: int
    size: int
    dispatched: float
    engine: str
    done: float = math.nan
    status: str = ""

    @property
    def service_s(self) -> float:
        return max(0.0, self.done - self.dispatched)


@dataclass(slots=True)
class DispatchLog:
    """A parsed decision log: its start record, the served requests by id and the
    recorded decisions (time, engine, request ids) in order."""

    start: dict[str, Any]
    requests: dict[str, Logged]
    decisions: list[tuple[float, str, list[str]]]
    unfinished: int = 0
    #: policies switched to while the gateway ran: {"t", "policy", "policy_config"}
    switches: list[dict[str, Any]] = field(default_factory=list)


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DiagnosisError(f"cannot read decision log {path}: {exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DiagnosisError(f"{path}:{n}: not JSON: {exc}") from None
        if not isinstance(record, dict) or "event" not in record:
            raise DiagnosisError(f"{path}:{n}: not a decision-log record")
        yield n, record


def read_log(path: str | Path) -> DispatchLog:
    """Parse a decision log; the last gateway run in it if it holds several.

    Raises:
        DiagnosisError: unreadable, malformed, or without a start or a served request.
    """
    path = Path(path)
    start: dict[str, Any] | None = None
    seen: dict[str, Logged] = {}
    decisions: list[tuple[float, str, list[str]]] = []
    switches: list[dict[str, Any]] = []
    for n, rec in _lines(path):
        try:
            if rec["event"] == "start":
                start, seen, decisions, switches = rec, {}, [], []
            elif rec["event"] == "policy":
                switches.append({k: rec[k] for k in ("t", "policy", "policy_config")})
            elif rec["event"] == "dispatch":
                t, engine = float(rec["t"]), str(rec["engine"])
                ids = [str(r["id"]) for r in rec["requests"]]
                decisions.append((t, engine, ids))
                for r in rec["requests"]:
                    seen[str(r["id"])] = Logged(
                        id=str(r["id"]),
                        kind=str(r["kind"]),
                        model=str(r["model"]),
                        priority=int(r["priority"]),
                        slo_ms=None if r["slo_ms"] is None else float(r["slo_ms"]),
                        arrival=float(r["arrival"]),
                        tokens=int(r["tokens"]),
                        size=int(r["size"]),
                        dispatched=t,
                        engine=engine,
                    )
            elif rec["event"] == "done" and str(rec["id"]) in seen:
                logged = seen[str(rec["id"])]
                logged.done, logged.status = float(rec["t"]), str(rec["status"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DiagnosisError(
                f"{path}:{n}: malformed {rec['event']}: {exc}"
            ) from None
    if start is None:
        raise DiagnosisError(f"{path} has no start record: is it a decision log?")
    served = {k: v for k, v in seen.items() if v.status == "ok"}
    if not served:
        raise DiagnosisError(f"{path} records no request served to the end")
    return DispatchLog(
        start, served, decisions, len(seen) - len(served), switches=switches
    )
