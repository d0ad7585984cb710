"""SAGE's built-in plugins: operators, routers, inference backends, vector indexes.

Each module here is registered through an entry point in group ``sage`` in
pyproject.toml, exactly as a third-party plugin package would register its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def register_named(register: Callable[..., None], classes: Iterable[Any]) -> None:
    """Register each class under its ``name`` attribute, described by the first line
    of its docstring (the built-in placement and request policies)."""
    for cls in classes:
        register(cls.name, cls, description=(cls.__doc__ or "").strip().splitlines()[0])
