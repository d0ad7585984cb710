"""The Python DSL: environments and streams, plus the Function bases and Contract."""

from __future__ import annotations

from sage_core.api.datastream import (
    ConnectedStreams,
    DataStream,
    KeyedStream,
    SinkStream,
)
from sage_core.api.environment import Environment, LocalEnvironment
from sage_core.contract import Contract
from sage_core.functions import (
    ByRole,
    CoMapFunction,
    FilterFunction,
    FlatMapFunction,
    Function,
    JoinFunction,
    MapFunction,
    OperatorContext,
    SinkFunction,
    SourceFunction,
)
from sage_core.runtime.job import JobFailed, JobHandle, JobResult
from sage_core.runtime.operators import OperatorFailure

__all__ = [
    "ByRole",
    "CoMapFunction",
    "ConnectedStreams",
    "Contract",
    "DataStream",
    "Environment",
    "FilterFunction",
    "FlatMapFunction",
    "Function",
    "JobFailed",
    "JobHandle",
    "JobResult",
    "JoinFunction",
    "KeyedStream",
    "LocalEnvironment",
    "MapFunction",
    "OperatorContext",
    "OperatorFailure",
    "SinkFunction",
    "SinkStream",
    "SourceFunction",
]
