"""Registers the built-in placement policies (``schedulers.placement``)."""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from schedulers.placement import POLICIES


@hookimpl
def register_schedulers(register: Any) -> None:
    for policy in POLICIES:
        register(
            policy.name,
            policy,
            scope="placement",
            description=(policy.__doc__ or "").strip().splitlines()[0],
        )
