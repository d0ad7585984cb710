"""Registers the built-in placement policies (``schedulers.placement``)."""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from sage_plugins import register_named
from schedulers.placement import POLICIES


@hookimpl
def register_placement_policies(register: Any) -> None:
    register_named(register, POLICIES)
