"""What a Dask job's master tells the scheduler's ``sage-jobs`` board, and what the
board tells it back.

``BoardReporting`` (mixed into ``DaskJob`` through ``Supervision``) pulls every
running replica's live counters every ``metrics_interval_s`` of the plan's settings,
posts them with the job's status and checkpoint counters to the board about once a
second (``POLL_S``), and returns the workers the scheduler saw leave, which stop the
attempt (``supervise``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from sage_core.common.errors import SageError
from sage_core.runtime.actor_calls import call_actor

if TYPE_CHECKING:
    from sage_core.compiler.plan import ExecutionPlan
    from sage_core.runtime.recovery import JobRecovery

_perf = time.perf_counter

#: seconds between board updates / lost-worker checks (replicas' live metrics are
#: pulled every ``metrics_interval_s`` of the plan's settings)
POLL_S = 1.0


class WorkerLost(SageError):
    """A worker hosting replicas of the job left the cluster."""


class BoardReporting:
    """Live metrics to the scheduler's board; lost workers from it."""

    client: Any
    plan: ExecutionPlan
    job_id: str
    recovery: JobRecovery
    _status: str
    _live: dict[str, dict[str, Any]]
    _next_metrics: float
    _actors: dict[str, Any]
    _outcomes: dict[str, dict[str, Any]]

    async def _poll(self) -> list[str]:
        if _perf() >= self._next_metrics:
            self._next_metrics = _perf() + self.plan.settings.metrics_interval_s
            await self._pull_metrics()
        return await self._post_board()

    async def _post_board(self) -> list[str]:
        """Post the live metrics to the scheduler's board; the workers it lost."""
        try:
            lost = await self.client.scheduler.sage_job_update(
                job=self.job_id,
                status=self._status,
                replicas=dict(self._live),
                checkpoints=self._checkpoint_stats(),
            )
        except Exception as exc:
            raise WorkerLost(f"the scheduler stopped answering: {exc}") from exc
        return list(lost)

    async def _pull_metrics(self) -> None:
        """Every running replica's live counters (one actor call each: it holds the
        workers' event loops for a moment, hence ``metrics_interval_s``)."""

        async def one(rid: str, actor: Any) -> None:
            try:
                self._live[rid] = await asyncio.wait_for(
                    call_actor(actor, "snapshot"), 2.0
                )
            except Exception:  # noqa: BLE001 - a slow or gone replica: keep the last
                return

        live = [
            one(rid, a) for rid, a in self._actors.items() if rid not in self._outcomes
        ]
        await asyncio.gather(*live)

    def _checkpoint_stats(self) -> dict[str, Any] | None:
        """Checkpoint and restart counters (None: checkpoints off, no restarts)."""
        r = self.recovery
        return r.stats.snapshot() if r.store is not None or r.stats.restarts else None
