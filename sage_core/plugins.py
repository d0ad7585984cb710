"""The plugin manager and the name -> object registries built from the hooks.

``load_plugins()`` loads every entry point of group ``"sage"`` (SAGE's own built-ins come
through the same door as third-party packages). ``registry(kind)`` collects what the
plugins registered for one family; ``resolve(kind, name)`` looks one entry up.

Switches (environment):
  ``SAGE_DISABLE_PLUGIN_AUTOLOAD=1``  load no entry point automatically;
  ``SAGE_PLUGINS=a,b``                load only these entry points (by entry-point or
                                      distribution name), even when autoload is off;
  ``SAGE_DEBUG_PLUGINS=1``            log every plugin as it loads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from sage_core import hookspecs
from sage_core.common.errors import PluginConflict, PluginError, UnknownPluginError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "sage"

#: family name (as shown by ``sage plugins --kind``) -> the hook that fills it
KINDS: dict[str, str] = {
    "operator": "register_operators",
    "placement-policy": "register_placement_policies",
    "admission-policy": "register_admission_policies",
    "request-policy": "register_request_policies",
    "router": "register_routers",
    "backend": "register_backends",
    "vector-index": "register_vector_indexes",
    "tool": "register_tools",
    "dashboard-route": "register_dashboard_routes",
}

#: family -> (deprecated hook that also fills it, the ``scope`` it takes from there)
_LEGACY: dict[str, tuple[str, str]] = {
    "placement-policy": ("register_schedulers", "placement"),
    "request-policy": ("register_schedulers", "requests"),
}

pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
pm.add_hookspecs(hookspecs)

_lock = threading.RLock()
_loaded = False
_origins: dict[int, tuple[str, str]] = {}  # id(plugin) -> (distribution, version)
_cache: dict[str, tuple[frozenset[int], Registry]] = {}


@dataclass(frozen=True, slots=True)
class PluginEntry:
    """One thing a plugin registered: an operator, router, backend, ..."""

    name: str
    kind: str
    obj: Any
    plugin: str
    distribution: str
    version: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (what ``sage plugins`` prints)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": plugin_hooks(self.plugin),
            **({"scope": self.meta["scope"]} if "scope" in self.meta else {}),
        }


class Registry(Mapping[str, PluginEntry]):
    """The entries of one family, by name. Lookups of unknown names suggest matches.

    A family may hold one name several times when each registration declares a
    different ``scope`` (a router for dataflow items and one for LLM requests); such
    a name resolves only within a scope: ``registry(kind).scoped("dataflow")[name]``.
    """

    def __init__(self, kind: str, entries: Iterable[PluginEntry]) -> None:
        self.kind = kind
        self._entries = list(entries)
        self._by_name: dict[str, list[PluginEntry]] = {}
        for entry in self._entries:
            self._by_name.setdefault(entry.name, []).append(entry)

    def __getitem__(self, name: str) -> PluginEntry:
        found = self._by_name.get(name)
        if not found:
            raise UnknownPluginError(self.kind, name, self._by_name)
        if len(found) > 1:
            scopes = ", ".join(sorted(str(e.meta.get("scope")) for e in found))
            raise PluginError(
                f"{self.kind} {name!r} exists in several scopes ({scopes}); "
                f"resolve it within one scope"
            )
        return found[0]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._by_name))

    def __len__(self) -> int:
        return len(self._by_name)

    def entries(self) -> list[PluginEntry]:
        """Every registration, including a name registered in several scopes."""
        return list(self._entries)

    def scoped(self, scope: str) -> Registry:
        """The entries usable in ``scope``: declared for it, for ``"any"``, or with
        no scope at all."""
        return Registry(
            self.kind,
            (e for e in self._entries if e.meta.get("scope") in (scope, "any", None)),
        )


def _scopes_clash(a: PluginEntry, b: Mapping[str, Any]) -> bool:
    first, second = a.meta.get("scope"), b.get("scope")
    return (
        first is None or second is None or "any" in (first, second) or (first == second)
    )


def _env_list(name: str) -> list[str]:
    return [
        part.strip() for part in os.environ.get(name, "").split(",") if part.strip()
    ]


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def load_plugins() -> None:
    """Load the entry points of group ``sage`` once per process (idempotent).

    Raises:
        PluginError: an entry point failed to import, or ``SAGE_PLUGINS`` names an
            entry point that is not installed.
    """
    global _loaded
    with _lock:
        if _loaded:
            return
        wanted = _env_list("SAGE_PLUGINS")
        autoload = not _truthy("SAGE_DISABLE_PLUGIN_AUTOLOAD")
        debug = _truthy("SAGE_DEBUG_PLUGINS")
        seen: set[str] = set()
        available: list[str] = []
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist_name = ep.dist.name if ep.dist is not None else "(unknown)"
            dist_version = ep.dist.version if ep.dist is not None else "0"
            available.append(ep.name)
            selected = ep.name in wanted or dist_name in wanted
            if not (selected or (autoload and not wanted)):
                continue
            seen.update({ep.name, dist_name})
            if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} from {dist_name} {dist_version} failed to "
                    f"import ({ep.value}): {exc}. Reinstall or uninstall it, or "
                    f"choose plugins with SAGE_PLUGINS=..."
                ) from exc
            pm.register(plugin, name=ep.name)
            _origins[id(plugin)] = (dist_name, dist_version)
            if debug:
                logger.warning(
                    "loaded plugin %s from %s %s", ep.name, dist_name, dist_version
                )
        missing = [name for name in wanted if name not in seen]
        if missing:
            raise PluginError(
                f"SAGE_PLUGINS names {', '.join(missing)}, which no installed "
                f"distribution provides. Installed entry points: "
                f"{', '.join(sorted(available)) or 'none'}."
            )
        pm.check_pending()
        _loaded = True


def plugin_hooks(plugin_name: str) -> list[str]:
    """The hook families a registered plugin implements, sorted."""
    plugin = pm.get_plugin(plugin_name)
    if plugin is None:
        return []
    return sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])


def _origin(plugin: object) -> tuple[str, str]:
    return _origins.get(id(plugin), ("(local)", "0"))


def _collect(kind: str) -> Registry:
    hook = getattr(pm.hook, KINDS[kind])
    calls: list[tuple[Any, str | None]] = [(i, None) for i in hook.get_hookimpls()]
    if kind in _LEGACY:
        legacy, scope = _LEGACY[kind]
        calls += [(impl, scope) for impl in getattr(pm.hook, legacy).get_hookimpls()]
    entries: list[PluginEntry] = []
    for impl, legacy_scope in reversed(calls):  # in call order
        dist, version = _origin(impl.plugin)

        def register(
            name: str,
            obj: object,
            _plugin: str = impl.plugin_name,
            _dist: str = dist,
            _version: str = version,
            _legacy_scope: str | None = legacy_scope,
            **meta: Any,
        ) -> None:
            if _legacy_scope is not None and meta.pop("scope", None) not in (
                None,
                "any",
                _legacy_scope,
            ):
                return  # the deprecated hook's entry for the other family
            if not isinstance(name, str) or not name:
                raise PluginError(
                    f"plugin {_plugin!r} registered a {kind} with an invalid name "
                    f"{name!r}; names are non-empty strings"
                )
            for prior in entries:
                if prior.name == name and _scopes_clash(prior, meta):
                    raise PluginConflict(
                        kind,
                        name,
                        f"{prior.distribution} (plugin {prior.plugin!r})",
                        f"{_dist} (plugin {_plugin!r})",
                    )
            entries.append(
                PluginEntry(name, kind, obj, _plugin, _dist, _version, dict(meta))
            )

        impl.function(register=register)
    return Registry(kind, entries)


def registry(kind: str) -> Registry:
    """All entries of one family (``"operator"``, ``"router"``, ...), by name.

    Raises:
        UnknownPluginError: ``kind`` is not a plugin family.
        PluginConflict: two plugins registered the same name.
    """
    if kind not in KINDS:
        raise UnknownPluginError("plugin kind", kind, KINDS)
    load_plugins()
    key = frozenset(id(p) for p in pm.get_plugins())
    with _lock:
        cached = _cache.get(kind)
        if cached is not None and cached[0] == key:
            return cached[1]
        reg = _collect(kind)
        _cache[kind] = (key, reg)
        return reg


def resolve(kind: str, name: str, *, scope: str | None = None) -> PluginEntry:
    """Look up one entry by family and name (within ``scope`` when given); unknown
    names list close matches."""
    reg = registry(kind)
    return (reg.scoped(scope) if scope else reg)[name]


def get(kind: str, name: str, *, scope: str | None = None) -> Any:
    """The object registered under ``name`` in family ``kind``."""
    return resolve(kind, name, scope=scope).obj


def describe_all(kind: str | None = None) -> list[dict[str, Any]]:
    """Every registered entry (optionally of one kind) as JSON-friendly dicts."""
    kinds = [kind] if kind else list(KINDS)
    rows = [entry.describe() for k in kinds for entry in registry(k).entries()]
    return sorted(rows, key=lambda row: (row["kind"], row["name"]))


def command_plugins(add: Callable[[str, str], None]) -> None:
    """Report, through ``add(command_name, plugin_name)``, which plugin added which
    command, by letting each ``register_commands`` impl fill a scratch group."""
    import click

    for impl in pm.hook.register_commands.get_hookimpls():
        scratch = click.Group()
        impl.function(cli=scratch)
        for command_name in scratch.commands:
            add(command_name, impl.plugin_name)


def origin_of(plugin_name: str) -> tuple[str, str]:
    """(distribution, version) of a registered plugin."""
    plugin = pm.get_plugin(plugin_name)
    return _origin(plugin) if plugin is not None else ("(unknown)", "0")
