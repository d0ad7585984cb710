"""Managed engines reach the gateway through the ``launch_engine`` hook: the core
knows no launcher by name (the vLLM one is a plugin, tested in
tests/gateway/test_real_engines.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest

from sage_core import hookimpl
from sage_core.llm.errors import ConfigError
from sage_core.llm.managed import launch
from sage_core.llm.registry import EngineSpec


class LauncherDouble:
    """A test double launcher: "starts" an EngineDouble for entries of launcher
    ``double`` and records which engines it stopped."""

    def __init__(self, engine_double: Callable[..., Any]) -> None:
        self.engine_double = engine_double
        self.stopped: list[str] = []

    @hookimpl
    def launch_engine(
        self, entry: Mapping[str, Any]
    ) -> tuple[EngineSpec, Callable[[], object], float] | None:
        if entry.get("launcher") != "double":
            return None
        engine = self.engine_double(entry["model"])
        spec = EngineSpec(id=entry["id"], url=engine.url, models=(entry["model"],))
        return spec, lambda: self.stopped.append(entry["id"]), time.monotonic() + 10


def test_an_entry_no_plugin_launches_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="launch_engine") as info:
        launch({"id": "m", "launcher": "nobody"})
    assert "'nobody'" in str(info.value)


def test_gateway_starts_serves_and_stops_a_plugin_launched_engine(
    register_plugin, engine_double, gateway
) -> None:
    launcher = register_plugin(LauncherDouble(engine_double), "launcher-double")
    gw = gateway({"managed": [{"launcher": "double", "id": "m1", "model": "tiny"}]})
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        answer = client.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert answer.status_code == 200, answer.text
        engines = {e["id"] for e in client.get("/admin/engines").json()["engines"]}
    assert engines == {"m1"}
    gw.stop()
    assert launcher.stopped == ["m1"]
