"""Registers SAGE's pages on the Dask dashboard of a SAGE scheduler (``/sage``)."""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from sage_core.observe.dashboard import ROUTES


@hookimpl
def register_dashboard_routes(register: Any) -> None:
    for path, handler in ROUTES:
        register(path, handler)
