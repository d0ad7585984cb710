"""Dashboard routes served by a SAGE scheduler, collected from plugins.

``sage scheduler`` appends this module to ``distributed.scheduler.http.routes``; Dask
imports it and mounts ``routes`` on the scheduler's HTTP server.
"""

from __future__ import annotations

from typing import Any

from sage_core.plugins import registry


def collect_routes() -> list[tuple[str, Any, dict[str, Any]]]:
    """(path, handler class, handler kwargs) of every registered dashboard route."""
    return [
        (entry.name, entry.obj, dict(entry.meta))
        for entry in registry("dashboard-route").values()
    ]


routes = collect_routes()
