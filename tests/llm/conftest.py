"""Fixtures of the control-plane tests: served EngineDouble engines and gateways."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest


def load_double() -> Any:
    """tests/llm/engine_double.py as a module (tests are not a package)."""
    name = "sage_tests_engine_double"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).with_name("engine_double.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


double = load_double()


@pytest.fixture
def engine_double() -> Iterator[Callable[..., Any]]:
    """``engine_double(model, kind="llm", **state)`` starts a served EngineDouble."""
    started: list[Any] = []

    def start(model: str, kind: str = "llm", **state: Any) -> Any:
        engine = double.EngineDouble(model, kind, **state).start()
        started.append(engine)
        return engine

    try:
        yield start
    finally:
        for engine in started:
            engine.stop()


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
