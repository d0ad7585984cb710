"""The plugin manager: registries, conflicts, unknown names and the env switches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from sage_core import hookimpl, plugins
from sage_core.common.errors import PluginConflict, PluginError, UnknownPluginError
from sage_core.routing import Router


class _RouterA(Router):
    name = "throwaway-router"


def _router_plugin(name: str, cls: type = _RouterA) -> object:
    class Plugin:
        @hookimpl
        def register_routers(self, register: Any) -> None:
            register(name, cls, scope="dataflow")

    return Plugin()


def test_registered_entry_resolves_by_name(register_plugin: Callable) -> None:
    register_plugin(_router_plugin("throwaway-router"), "throwaway")
    entry = plugins.resolve("router", "throwaway-router")
    assert entry.obj is _RouterA
    assert entry.plugin == "throwaway"
    assert entry.meta == {"scope": "dataflow"}
    assert entry.distribution == "(local)"


def test_registry_is_refreshed_when_plugins_change(register_plugin: Callable) -> None:
    assert "throwaway-router" not in plugins.registry("router")
    register_plugin(_router_plugin("throwaway-router"), "throwaway")
    assert "throwaway-router" in plugins.registry("router")


def test_duplicate_name_raises_conflict_naming_both(register_plugin: Callable) -> None:
    register_plugin(_router_plugin("dup-router"), "first-plugin")
    register_plugin(_router_plugin("dup-router"), "second-plugin")
    with pytest.raises(PluginConflict) as info:
        plugins.registry("router")
    message = str(info.value)
    assert "dup-router" in message
    assert "first-plugin" in message and "second-plugin" in message


def test_unknown_name_lists_close_matches(register_plugin: Callable) -> None:
    register_plugin(_router_plugin("throwaway-sticky-zq"), "throwaway")
    with pytest.raises(UnknownPluginError) as info:
        plugins.resolve("router", "throwaway-stiky-zq")
    assert info.value.matches == ["throwaway-sticky-zq"]
    assert "Did you mean 'throwaway-sticky-zq'" in str(info.value)
    assert isinstance(info.value, KeyError)  # callers may catch it as a lookup miss


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(UnknownPluginError, match="unknown plugin kind 'routers'"):
        plugins.registry("routers")


def test_invalid_registered_name_is_rejected(register_plugin: Callable) -> None:
    register_plugin(_router_plugin(""), "bad-names")
    with pytest.raises(PluginError, match="invalid name"):
        plugins.registry("router")


def test_load_plugins_is_idempotent() -> None:
    plugins.load_plugins()
    before = set(plugins.pm.list_name_plugin())
    plugins.load_plugins()
    assert set(plugins.pm.list_name_plugin()) == before


def _loaded_plugin_names(
    env: dict[str, str], tmp_path: Any
) -> subprocess.CompletedProcess:
    code = (
        "import json; from sage_core import plugins; plugins.load_plugins(); "
        "print(json.dumps(sorted(n for n, _ in plugins.pm.list_name_plugin())))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=tmp_path,  # keep the source tree off sys.path
        timeout=120,
        check=False,
    )


def _builtin_entry_points() -> list[str]:
    from importlib import metadata

    return sorted(ep.name for ep in metadata.entry_points(group="sage"))


def test_disable_autoload_loads_no_entry_point(tmp_path: Any) -> None:
    result = _loaded_plugin_names({"SAGE_DISABLE_PLUGIN_AUTOLOAD": "1"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_sage_plugins_selects_named_entry_points(tmp_path: Any) -> None:
    names = _builtin_entry_points()
    if not names:
        pytest.skip("no entry point of group 'sage' is installed yet")
    env = {"SAGE_DISABLE_PLUGIN_AUTOLOAD": "1", "SAGE_PLUGINS": names[0]}
    result = _loaded_plugin_names(env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [names[0]]


def test_sage_plugins_naming_a_missing_plugin_fails_clearly(tmp_path: Any) -> None:
    result = _loaded_plugin_names({"SAGE_PLUGINS": "no-such-plugin"}, tmp_path)
    assert result.returncode != 0
    assert "SAGE_PLUGINS names no-such-plugin" in result.stderr


class _PolicyA:
    pass


class _PolicyB:
    pass


def _scheduler_plugin(name: str, cls: type, scope: str | None) -> object:
    class Plugin:
        @hookimpl
        def register_schedulers(self, register: Any) -> None:
            meta = {"scope": scope} if scope else {}
            register(name, cls, **meta)

    return Plugin()


def test_one_name_may_serve_different_scopes(register_plugin: Callable) -> None:
    register_plugin(_scheduler_plugin("zq-policy", _PolicyA, "placement"), "p1")
    register_plugin(_scheduler_plugin("zq-policy", _PolicyB, "requests"), "p2")
    assert plugins.get("scheduler", "zq-policy", scope="placement") is _PolicyA
    assert plugins.get("scheduler", "zq-policy", scope="requests") is _PolicyB
    with pytest.raises(PluginError, match="several scopes"):
        plugins.resolve("scheduler", "zq-policy")
    rows = [r for r in plugins.describe_all("scheduler") if r["name"] == "zq-policy"]
    assert sorted(r["scope"] for r in rows) == ["placement", "requests"]


@pytest.mark.parametrize(
    ("first", "second"),
    [("placement", "placement"), ("any", "requests"), (None, "requests")],
)
def test_same_name_in_overlapping_scopes_conflicts(
    register_plugin: Callable, first: str | None, second: str | None
) -> None:
    register_plugin(_scheduler_plugin("zq-policy", _PolicyA, first), "p1")
    register_plugin(_scheduler_plugin("zq-policy", _PolicyB, second), "p2")
    with pytest.raises(PluginConflict, match="zq-policy"):
        plugins.registry("scheduler")
