"""Dask preload run inside every process started by ``sage scheduler``/``sage worker``.

Dask imports this module in the new server process and calls ``dask_setup``; SAGE loads
its plugins there so operators, routers and backends resolve by name on that process.
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
    logger.info("SAGE plugins loaded in %s", type(server).__name__)
