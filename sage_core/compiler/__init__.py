"""Compiling a logical graph into a placed ExecutionPlan, and the placement interface."""

from __future__ import annotations

from sage_core.compiler.compile import compile_plan, resolve_policy
from sage_core.compiler.dot import plan_to_dot
from sage_core.compiler.placement import (
    CandidateTrace,
    ClusterView,
    FilterTrace,
    Ledger,
    LocalPlacement,
    PlacementDecision,
    PlacementError,
    PlacementPolicy,
    ReplicaDemand,
    WorkerView,
)
from sage_core.compiler.plan import (
    ChannelPlan,
    ExecutionPlan,
    OperatorPlan,
    PlanFormatError,
    ReplicaPlan,
    RuntimeSettings,
    TaskPlan,
)
from sage_core.compiler.rescale import RescaleError, check_rescalable, grow, shrink

compile = compile_plan

__all__ = [
    "CandidateTrace",
    "ChannelPlan",
    "ClusterView",
    "ExecutionPlan",
    "FilterTrace",
    "Ledger",
    "LocalPlacement",
    "OperatorPlan",
    "PlacementDecision",
    "PlacementError",
    "PlacementPolicy",
    "PlanFormatError",
    "ReplicaDemand",
    "ReplicaPlan",
    "RescaleError",
    "RuntimeSettings",
    "TaskPlan",
    "WorkerView",
    "check_rescalable",
    "compile",
    "compile_plan",
    "grow",
    "plan_to_dot",
    "resolve_policy",
    "shrink",
]
