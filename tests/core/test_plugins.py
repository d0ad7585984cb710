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


def _policy_plugin(name: str, placement: type | None, requests: type | None) -> object:
    class Plugin:
        @hookimpl
        def register_placement_policies(self, register: Any) -> None:
            if placement is not None:
                register(name, placement)

        @hookimpl
        def register_request_policies(self, register: Any) -> None:
            if requests is not None:
                register(name, requests)

    return Plugin()


def _legacy_scheduler_plugin(name: str, cls: type, scope: str | None) -> object:
    class Plugin:
        @hookimpl
        def register_schedulers(self, register: Any) -> None:
            meta = {"scope": scope} if scope else {}
            register(name, cls, **meta)

    return Plugin()


def test_placement_and_request_policies_are_separate_families(
    register_plugin: Callable,
) -> None:
    register_plugin(_policy_plugin("zq-policy", _PolicyA, _PolicyB), "p1")
    assert plugins.get("placement-policy", "zq-policy") is _PolicyA
    assert plugins.get("request-policy", "zq-policy") is _PolicyB
    rows = [r for r in plugins.describe_all() if r["name"] == "zq-policy"]
    assert sorted(r["kind"] for r in rows) == ["placement-policy", "request-policy"]
    assert all("scope" not in r for r in rows)


def test_sage_plugins_lists_each_builtin_policy_once_per_family() -> None:
    rows = [(r["kind"], r["name"]) for r in plugins.describe_all()]
    assert len(rows) == len(set(rows)), sorted(r for r in rows if rows.count(r) > 1)
    assert ("placement-policy", "fifo") in rows
    assert ("request-policy", "fifo") in rows
    assert not any(kind == "scheduler" for kind, _ in rows)


def test_same_policy_name_twice_in_one_family_conflicts(
    register_plugin: Callable,
) -> None:
    register_plugin(_policy_plugin("zq-policy", _PolicyA, None), "p1")
    register_plugin(_policy_plugin("zq-policy", _PolicyB, None), "p2")
    with pytest.raises(PluginConflict, match="zq-policy"):
        plugins.registry("placement-policy")
    assert "zq-policy" not in plugins.registry("request-policy")


@pytest.mark.parametrize(
    ("scope", "placement", "requests"),
    [("placement", True, False), ("requests", False, True), (None, True, True)],
)
def test_deprecated_register_schedulers_still_fills_the_families(
    register_plugin: Callable, scope: str | None, placement: bool, requests: bool
) -> None:
    with pytest.warns(DeprecationWarning, match="register_placement_policies"):
        register_plugin(_legacy_scheduler_plugin("zq-old", _PolicyA, scope), "old")
    assert ("zq-old" in plugins.registry("placement-policy")) is placement
    assert ("zq-old" in plugins.registry("request-policy")) is requests
    if placement:
        assert plugins.resolve("placement-policy", "zq-old").meta == {}


def test_deprecated_hook_conflicts_with_the_new_one(register_plugin: Callable) -> None:
    register_plugin(_policy_plugin("zq-policy", _PolicyA, None), "p1")
    with pytest.warns(DeprecationWarning):
        register_plugin(
            _legacy_scheduler_plugin("zq-policy", _PolicyB, "placement"), "p2"
        )
    with pytest.raises(PluginConflict, match="zq-policy"):
        plugins.registry("placement-policy")
