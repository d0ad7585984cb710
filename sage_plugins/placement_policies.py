"""Registers the built-in placement policies (``schedulers.placement``) and job
admission policies (``schedulers.admission``)."""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from sage_plugins import register_named
from schedulers.admission import POLICIES as ADMISSION
from schedulers.placement import POLICIES


@hookimpl
def register_placement_policies(register: Any) -> None:
    register_named(register, POLICIES)


@hookimpl
def register_admission_policies(register: Any) -> None:
    register_named(register, ADMISSION)
