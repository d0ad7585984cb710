"""The diagnosis panel of the ``/sage`` page: ``GET /sage/api/diagnosis?job=ID``.

It returns what ``sage diagnose JOB --address …`` prints, computed from the same
job-board entry (``sage_core.diagnosis`` on ``live_record``): the bottleneck operator,
its class and evidence, and the first recommendations with their predicted effect.
The what-if predictions behind the recommendations take a moment of CPU, so they run
in a thread (the scheduler's event loop keeps serving) and each job's verdict is kept
for ``TTL_S`` seconds, however many pages ask for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from distributed.http.utils import RequestHandler

from sage_core.observe.jobboard import board_of

#: seconds a job's verdict is served again before it is recomputed
TTL_S = 5.0
#: recommendations the panel shows
SHOWN = 3


def verdict_payload(board: Any, job_id: str) -> dict[str, Any]:
    """The verdict on job ``job_id`` (id or unique prefix) of ``board``:
    ``{"job", "status", "bottleneck", "recommendations", "measured"}``, or
    ``{"job", "error"}`` saying why there is none (unknown job, nothing measured
    yet)."""
    from sage_core.diagnosis import DiagnosisError, diagnose, job_model
    from sage_core.diagnosis.model import live_record

    entry = board.get(job_id) if board is not None and job_id else None
    if entry is None:
        return {"job": job_id, "error": f"no job {job_id!r} on this scheduler"}
    if not entry.get("replicas"):
        return {"job": entry["job"], "error": "no replica has reported counters yet"}
    try:
        out = diagnose(job_model(live_record(entry)))
    except DiagnosisError as exc:
        return {"job": entry["job"], "error": str(exc)}
    return {
        "job": entry["job"],
        "status": entry.get("status", ""),
        "bottleneck": out["bottleneck"],
        "recommendations": out["recommendations"][:SHOWN],
        "measured": out["measured"],
    }


class VerdictCache:
    """Verdicts by job id, each reused for ``ttl_s`` seconds."""

    def __init__(
        self, ttl_s: float = TTL_S, clock: Callable[[], float] = time.monotonic
    ):
        self.ttl_s, self._clock = ttl_s, clock
        self._kept: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, job_id: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        now = self._clock()
        kept = self._kept.get(job_id)
        if kept is not None and now - kept[0] < self.ttl_s:
            return kept[1]
        out = compute()
        self._kept = {k: v for k, v in self._kept.items() if now - v[0] < self.ttl_s}
        self._kept[job_id] = (now, out)
        return out


_CACHE = VerdictCache()


class DiagnosisAPI(RequestHandler):
    """``GET /sage/api/diagnosis?job=ID``: ``verdict_payload`` as JSON (404 for a
    job the board does not hold)."""

    async def get(self) -> None:
        job_id = self.get_query_argument("job", "")
        board = board_of(self.server)
        self.set_header("Content-Type", "application/json")
        if board is None or not job_id or board.get(job_id) is None:
            self.set_status(404)
            self.write(json.dumps(verdict_payload(None, job_id)))
            return
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(
            None, _CACHE.get, job_id, lambda: verdict_payload(board, job_id)
        )
        self.write(json.dumps(out, default=repr))
