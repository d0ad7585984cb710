"""Fixtures of the plugin tests: the EngineDouble (tests/llm/engine_double.py) served."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def _engine_double_module() -> Any:
    name = "sage_tests_engine_double"  # the same module object tests/llm uses
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "llm" / "engine_double.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def engine_double() -> Iterator[Callable[..., Any]]:
    """``engine_double(model, kind="llm", **state)`` serves an OpenAI-compatible test
    double on 127.0.0.1 (stopped after the test)."""
    double = _engine_double_module()
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
