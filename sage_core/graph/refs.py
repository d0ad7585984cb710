"""Turning what a user wrote (plugin name, dotted path, object) into references, and
references back into objects (on whichever process runs the operator)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from sage_core import plugins
from sage_core.common.errors import SageError, UnknownPluginError
from sage_core.functions import ByRole, Function
from sage_core.graph.model import KeySpec, OperatorRef


class UnresolvedReference(SageError, LookupError):
    """A dotted path or plugin name does not resolve to an object."""


def describe_object(obj: Any) -> str:
    """A short human name for an inline object (``module.qualname`` or its type)."""
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None)
    if isinstance(obj, tuple):
        return "(" + ", ".join(describe_object(o) for o in obj) + ")"
    return f"{module}.{name}" if module else str(name)


def _shipped_by_value(module: str) -> bool:
    """Whether ``module`` (or a package above it) was registered with
    ``cloudpickle.register_pickle_by_value``: its code is not installed on the
    workers, so its objects travel pickled, as Dask ships them."""
    import cloudpickle

    registry = cloudpickle.list_registry_pickle_by_value()
    parts = module.split(".")
    return any(".".join(parts[:i]) in registry for i in range(1, len(parts) + 1))


def _importable_path(obj: Any) -> str | None:
    """``"module:qualname"`` when ``obj`` is reachable by import (and not registered
    to travel by value), else None."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        return None
    if _shipped_by_value(module):
        return None
    try:
        found = load_path(f"{module}:{qualname}")
    except UnresolvedReference:
        return None
    return f"{module}:{qualname}" if found is obj else None


def operator_ref(spec: Any) -> OperatorRef:
    """A reference for what the DSL was given: plugin name, dotted path, or object.

    Importable functions and classes become ``import`` references (portable plain
    data); lambdas, closures, local classes and objects of modules registered with
    ``cloudpickle.register_pickle_by_value`` stay ``inline``.

    Raises:
        TypeError: ``spec`` is a Function *instance* (pass the class and config).
    """
    if isinstance(spec, str):
        return OperatorRef("import" if ":" in spec else "plugin", spec)
    if isinstance(spec, Function):
        raise TypeError(
            f"got an instance of {type(spec).__name__}; pass the class and its config "
            f"instead (e.g. .map({type(spec).__name__}, param=...)) so every replica "
            f"builds its own instance"
        )
    if isinstance(spec, tuple):
        return OperatorRef("inline", describe_object(spec), spec)
    if not callable(spec):
        raise TypeError(
            f"an operator is a plugin name, a 'pkg.module:attr' path, a callable or "
            f"a Function class; got {type(spec).__name__}"
        )
    path = _importable_path(spec)
    if path is not None:
        return OperatorRef("import", path, spec)
    return OperatorRef("inline", describe_object(spec), spec)


def key_spec(key: Any) -> KeySpec:
    """A key reference: a field name, a ``"pkg.mod:fn"`` path or a callable."""
    if isinstance(key, str):
        return KeySpec("import", key) if ":" in key else KeySpec("field", key)
    if not callable(key):
        raise TypeError(
            f"key_by takes a field name, a 'pkg.module:fn' path or a callable; "
            f"got {type(key).__name__}"
        )
    path = _importable_path(key)
    if path is not None:
        return KeySpec("import", path, key)
    return KeySpec("inline", describe_object(key), key)


def load_path(path: str) -> Any:
    """Import ``"pkg.module:attr.sub"`` and return the attribute.

    Raises:
        UnresolvedReference: the module or attribute does not exist.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise UnresolvedReference(
            f"{path!r} is not a dotted path; write 'package.module:attribute'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnresolvedReference(
            f"cannot import module {module_name!r}: {exc}"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnresolvedReference(
                f"module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj


def load_operator(ref: OperatorRef) -> Any:
    """The object a reference points to (plugin entry object, import, inline).

    Raises:
        UnknownPluginError: no operator plugin has that name.
        UnresolvedReference: a dotted path does not import.
    """
    if ref.obj is not None:
        return ref.obj
    if ref.kind == "plugin":
        return plugins.get("operator", ref.name)
    if ref.kind == "import":
        return load_path(ref.name)
    raise UnresolvedReference(
        f"inline operator {ref.name} was not shipped with the plan; use a plugin "
        f"name or an importable 'pkg.module:attr' path"
    )


def load_key(spec: KeySpec) -> Any:
    """The object of a key reference (None for field keys)."""
    if spec.kind == "field":
        return None
    if spec.obj is not None:
        return spec.obj
    if spec.kind == "import":
        return load_path(spec.name)
    raise UnresolvedReference(f"inline key function {spec.name} was not shipped")


def for_role(obj: Any, role: str) -> Any:
    """The implementation of ``obj`` for ``role`` (picks a ByRole variant).

    Raises:
        LookupError: ``obj`` is a ByRole without a variant for ``role``.
    """
    return obj.for_role(role) if isinstance(obj, ByRole) else obj


def declared_role(obj: Any, ref: OperatorRef) -> str | None:
    """The role an implementation declares: a Function class's ``role``, or the
    plugin's ``role=`` metadata; None when it does not say."""
    if isinstance(obj, ByRole):
        return None
    if inspect.isclass(obj) and issubclass(obj, Function) and obj.role:
        return obj.role
    if ref.kind == "plugin":
        try:
            role = plugins.resolve("operator", ref.name).meta.get("role")
        except UnknownPluginError:
            return None
        return str(role) if role else None
    return None


def plugin_entry_role(name: str) -> str | None:
    """The role of a registered operator plugin (class role or ``role=`` meta)."""
    entry = plugins.resolve("operator", name)
    obj = entry.obj
    if isinstance(obj, ByRole):
        return None
    if inspect.isclass(obj) and issubclass(obj, Function) and obj.role:
        return obj.role
    role = entry.meta.get("role")
    return str(role) if role else None
