"""The diagnosis panel of the ``/sage`` page: ``GET /sage/api/diagnosis?job=ID``.

It returns what ``sage diagnose JOB --address …`` prints, computed from the same
job-board entry (``sage_core.diagnosis`` on ``live_record``): the bottleneck operator,
its class and evidence, and the first recommendations with their predicted effect.
The what-if predictions behind the recommendations take CPU (seconds for a job of
thousands of small packets on a loaded machine), so they run in a thread (the
scheduler's event loop keeps serving), one computation per job at a time however
many pages ask (``VerdictCache``): a running job's verdict is kept for ``TTL_S``
seconds or twice as long as it took to compute, whichever is longer, and a finished
job's for good (its record no longer changes).
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
#: board statuses of a job that has ended (its verdict no longer changes)
FINAL = frozenset({"succeeded", "failed", "cancelled", "lost"})


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
    """Verdicts by job id (see the module docstring); at most ``limit`` kept."""

    def __init__(
        self,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
        limit: int = 256,
    ):
        self.ttl_s, self._clock, self.limit = ttl_s, clock, limit
        #: job id -> (computed at, seconds it took, final, verdict)
        self._kept: dict[str, tuple[float, float, bool, dict[str, Any]]] = {}
        self._running: dict[str, asyncio.Future[dict[str, Any]]] = {}  # by job id

    def _fresh(self, job_id: str) -> dict[str, Any] | None:
        kept = self._kept.get(job_id)
        if kept is None:
            return None
        at, took, final, out = kept
        if final or self._clock() - at < max(self.ttl_s, 2 * took):
            return out
        return None

    async def get(
        self, job_id: str, final: bool, compute: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Job ``job_id``'s verdict: kept, being computed (awaited), or computed
        now by ``compute`` in a thread. ``final``: the job has ended."""
        out = self._fresh(job_id)
        if out is not None:
            return out
        running = self._running.get(job_id)
        if running is not None:
            return await asyncio.shield(running)
        t0 = self._clock()
        fut = asyncio.get_running_loop().run_in_executor(None, compute)
        self._running[job_id] = fut
        try:
            out = await fut
        finally:
            del self._running[job_id]
        now = self._clock()
        self._kept.pop(job_id, None)
        self._kept[job_id] = (now, now - t0, final, out)
        while len(self._kept) > self.limit:  # the oldest go first
            del self._kept[next(iter(self._kept))]
        return out


_CACHE = VerdictCache()


class DiagnosisAPI(RequestHandler):
    """``GET /sage/api/diagnosis?job=ID``: ``verdict_payload`` as JSON (404 for a
    job the board does not hold)."""

    async def get(self) -> None:
        job_id = self.get_query_argument("job", "")
        board = board_of(self.server)
        self.set_header("Content-Type", "application/json")
        entry = board.get(job_id) if board is not None and job_id else None
        if entry is None:
            self.set_status(404)
            self.write(json.dumps(verdict_payload(None, job_id)))
            return
        final = entry.get("status") in FINAL
        out = await _CACHE.get(job_id, final, lambda: verdict_payload(board, job_id))
        self.write(json.dumps(out, default=repr))
