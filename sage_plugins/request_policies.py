"""Registers the built-in request policies of the LLM control plane."""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from schedulers.requests import POLICIES


@hookimpl
def register_schedulers(register: Any) -> None:
    for policy in POLICIES:
        register(
            policy.name,
            policy,
            scope="requests",
            description=(policy.__doc__ or "").strip().splitlines()[0],
        )
