"""The Python DSL: environments and streams, plus the Function bases and Contract.

``__all__`` here is the one list of DSL names: ``sage_core`` exports each of them too.
``DaskEnvironment`` loads on first use (it imports ``distributed``), and so do
``PipelineServer``/``ServeError`` (Starlette).
"""

from __future__ import annotations

from sage_core.api.datastream import (
    ConnectedStreams,
    DataStream,
    KeyedStream,
    SinkStream,
)
from sage_core.api.environment import Environment, LocalEnvironment
from sage_core.api.jobs import JobClient, JobError
from sage_core.api.windowing import StreamShapeError, WindowedStream
from sage_core.checkpoint import (
    CheckpointDirError,
    CheckpointMismatch,
    CheckpointNotFound,
    RestartStrategyError,
)
from sage_core.compiler.rescale import RescaleError
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
    "CheckpointDirError",
    "CheckpointMismatch",
    "CheckpointNotFound",
    "CoMapFunction",
    "ConnectedStreams",
    "Contract",
    "DaskEnvironment",
    "DataStream",
    "Environment",
    "FilterFunction",
    "FlatMapFunction",
    "Function",
    "JobClient",
    "JobError",
    "JobFailed",
    "JobHandle",
    "JobResult",
    "JoinFunction",
    "KeyedStream",
    "LocalEnvironment",
    "MapFunction",
    "OperatorContext",
    "OperatorFailure",
    "PipelineServer",
    "RescaleError",
    "RestartStrategyError",
    "ServeError",
    "SinkFunction",
    "SinkStream",
    "SourceFunction",
    "StreamShapeError",
    "WindowedStream",
]


def __getattr__(name: str) -> object:
    if name == "DaskEnvironment":
        from sage_core.api.dask_environment import DaskEnvironment

        return DaskEnvironment
    if name in ("PipelineServer", "ServeError"):  # serving loads Starlette
        from sage_core import serve

        return getattr(serve, name)
    raise AttributeError(f"module 'sage_core.api' has no attribute {name!r}")
