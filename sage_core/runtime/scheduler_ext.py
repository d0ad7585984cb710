"""The ``sage-jobs`` scheduler plugin: SAGE's job board inside the Dask scheduler.

It keeps a ``JobBoard`` (see ``sage_core.observe.jobboard``), answers the job
masters' RPCs (``sage_job_submit``, ``sage_job_update``, ``sage_jobs``, ``sage_job``,
``sage_resident``), notes lost workers, exports the board on ``/metrics`` and adds a
"Sage" link to the dashboard's navigation bar. ``install(scheduler)`` is idempotent:
``sage scheduler`` installs it at start, and ``DaskEnvironment`` makes sure any
cluster it connects to has it.
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from sage_core.observe.jobboard import BOARD_PLUGIN, JobBoard
from sage_core.observe.prometheus import register_board, unregister_board
from sage_core.runtime.jobmanager import install as install_manager

logger = logging.getLogger(__name__)

NAME = BOARD_PLUGIN


class SageJobsPlugin(SchedulerPlugin):
    """Holds the job board and the scheduler handlers that read and write it."""

    name = NAME
    idempotent = True

    def __init__(self) -> None:
        self.board = JobBoard()
        self.manager: Any = None
        self._attached = False

    def attach(self, scheduler: Any) -> None:
        if self._attached:
            return
        self._attached = True
        board = self.board

        def submit(record: dict[str, Any]) -> None:
            board.submit(record)

        def update(
            job: str,
            status: str | None = None,
            replicas: dict[str, Any] | None = None,
            error: str | None = None,
            checkpoints: dict[str, Any] | None = None,
        ) -> list[str]:
            return board.update(
                job,
                status=status,
                replicas=replicas,
                error=error,
                checkpoints=checkpoints,
            )

        def jobs() -> list[dict[str, Any]]:
            return [
                {k: v for k, v in j.items() if k not in ("plan", "replicas")}
                for j in board.jobs.values()
            ]

        def job(job: str) -> dict[str, Any] | None:
            return board.get(job)

        def resident() -> dict[str, Any]:
            return {"resident": board.resident(), "lost": sorted(board.lost_workers)}

        scheduler.handlers.update(
            {
                "sage_job_submit": submit,
                "sage_job_update": update,
                "sage_jobs": jobs,
                "sage_job": job,
                "sage_resident": resident,
            }
        )
        register_board(board)
        _link_dashboard(scheduler)
        self.manager = install_manager(scheduler, board)  # sage submit / sage jobs

    async def start(self, scheduler: Any) -> None:
        self.attach(scheduler)

    async def close(self) -> None:
        unregister_board(self.board)
        if self.manager is not None:
            self.manager.close()

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self.board.worker_added(worker)

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.board.worker_lost(worker)
        hit = [
            j["job"]
            for j in self.board.running()
            if any(p["worker"] == worker for p in j.get("placement", {}).values())
        ]
        if hit:
            logger.warning("worker %s left; it hosted replicas of %s", worker, hit)


def _link_dashboard(scheduler: Any) -> None:
    """Add "sage" to the dashboard's navigation bar (when Bokeh is there)."""
    try:
        from distributed.dashboard.scheduler import template_variables
    except ImportError:  # no bokeh: the /sage page still works, unlinked
        return
    pages = template_variables(scheduler)["pages"]
    if "sage" not in pages:
        pages.append("sage")


def install(scheduler: Any) -> SageJobsPlugin:
    """The scheduler's ``sage-jobs`` plugin, added now when missing."""
    plugin = scheduler.plugins.get(NAME)
    if plugin is None:
        plugin = SageJobsPlugin()
        plugin.attach(scheduler)
        scheduler.add_plugin(plugin, name=NAME)
    return plugin


def install_on(dask_scheduler: Any = None) -> bool:
    """For ``client.run_on_scheduler(install_on)``."""
    install(dask_scheduler)
    return True
