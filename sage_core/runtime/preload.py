"""Dask preload run inside every process started by ``sage scheduler``/``sage worker``.

Dask imports this module in the new server process and calls ``dask_setup``; SAGE loads
its plugins there so operators, routers and backends resolve by name on that process.
On a plain ``dask scheduler`` it also mounts SAGE's dashboard routes (``/sage``), which
``sage scheduler`` mounts through ``distributed.scheduler.http.routes``.
"""

from __future__ import annotations

import logging
from typing import Any

from sage_core.plugins import load_plugins

logger = logging.getLogger(__name__)


def dask_setup(server: Any) -> None:
    """Load SAGE plugins in the Dask server process that is starting."""
    load_plugins()
    if hasattr(server, "add_plugin") and hasattr(server, "workers"):  # a Scheduler
        from sage_core.runtime.scheduler_ext import install

        install(server)  # the sage-jobs board, /sage page data, /metrics series
        _mount_routes(server)
    logger.info("SAGE plugins loaded in %s", type(server).__name__)


ROUTES_MODULE = "sage_core.observe.routes"


def _mount_routes(scheduler: Any) -> None:
    """Add the ``/sage`` routes to the scheduler's HTTP server unless Dask's config
    already mounts them (with ``--dashboard-prefix``, add ``sage_core.observe.routes``
    to ``distributed.scheduler.http.routes`` instead: the prefix is not kept)."""
    import dask

    app = getattr(scheduler, "http_application", None)
    if app is None or ROUTES_MODULE in dask.config.get(
        "distributed.scheduler.http.routes", []
    ):
        return
    from distributed.http.utils import get_handlers

    app.add_handlers(".*$", get_handlers(scheduler, [ROUTES_MODULE], "/"))
