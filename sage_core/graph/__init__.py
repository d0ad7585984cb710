"""The logical graph of a pipeline: model, validation and the YAML/JSON spec."""

from __future__ import annotations

from sage_core.graph.model import (
    Edge,
    GraphError,
    KeySpec,
    LogicalGraph,
    Node,
    OperatorRef,
    Problem,
)
from sage_core.graph.spec import PipelineSpec, SpecError, load_spec
from sage_core.graph.validate import check, effective_contract, validate

__all__ = [
    "Edge",
    "GraphError",
    "KeySpec",
    "LogicalGraph",
    "Node",
    "OperatorRef",
    "PipelineSpec",
    "Problem",
    "SpecError",
    "check",
    "effective_contract",
    "load_spec",
    "validate",
]
