"""Registers the built-in request policies of the LLM control plane."""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from sage_plugins import register_named
from schedulers.adaptive import AdaptivePolicy
from schedulers.cost import CostOptimizedPolicy
from schedulers.interference import InterferenceAwarePolicy
from schedulers.requests import POLICIES


@hookimpl
def register_request_policies(register: Any) -> None:
    register_named(
        register,
        (*POLICIES, InterferenceAwarePolicy, CostOptimizedPolicy, AdaptivePolicy),
    )
