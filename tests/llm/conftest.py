"""Fixtures of the control-plane tests: served gateways (``engine_double`` is in the
root conftest.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

# the EngineDouble module, loaded once by the root conftest.py
double = sys.modules["sage_tests_engine_double"]


@pytest.fixture
def gateway() -> Iterator[Callable[..., Any]]:
    """``gateway(config_dict)`` serves a gateway app; returns the ServedApp with
    ``.gateway`` (its Gateway object) once every configured engine was checked."""
    from sage_core.gateway import create_app
    from sage_core.llm.config import GatewayConfig

    started: list[Any] = []

    def start(config: dict[str, Any], wait_healthy: bool = True) -> Any:
        app = create_app(GatewayConfig.from_dict(config))
        served = double.ServedApp(app).start()
        served.gateway = app.state.gateway
        started.append(served)
        if wait_healthy and config.get("engines"):
            deadline = time.monotonic() + 10
            while httpx.get(served.url + "/health").status_code != 200:
                assert time.monotonic() < deadline, "gateway engines never healthy"
                time.sleep(0.05)
        return served

    try:
        yield start
    finally:
        for served in started:
            served.stop()
