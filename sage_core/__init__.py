"""SAGE: declarative LLM inference pipelines compiled into execution plans on Dask."""

from __future__ import annotations

from importlib import metadata

from sage_core.common.errors import (
    PluginConflict,
    PluginError,
    SageError,
    UnknownPluginError,
)
from sage_core.hookspecs import hookimpl

try:
    __version__ = metadata.version("sage-dask")
except metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

#: DSL names importable from ``sage_core`` (loaded on first use: plain
#: ``import sage_core`` stays light for plugins and the CLI)
_DSL = (
    "CoMapFunction",
    "Contract",
    "DataStream",
    "Environment",
    "FilterFunction",
    "FlatMapFunction",
    "Function",
    "JobFailed",
    "JobResult",
    "JoinFunction",
    "LocalEnvironment",
    "MapFunction",
    "OperatorContext",
    "SinkFunction",
    "SourceFunction",
)


def __getattr__(name: str) -> object:
    if name in _DSL:
        from sage_core import api

        return getattr(api, name)
    raise AttributeError(f"module 'sage_core' has no attribute {name!r}")


__all__ = [
    "CoMapFunction",
    "Contract",
    "DataStream",
    "Environment",
    "FilterFunction",
    "FlatMapFunction",
    "Function",
    "JobFailed",
    "JobResult",
    "JoinFunction",
    "LocalEnvironment",
    "MapFunction",
    "OperatorContext",
    "PluginConflict",
    "PluginError",
    "SageError",
    "SinkFunction",
    "SourceFunction",
    "UnknownPluginError",
    "__version__",
    "hookimpl",
]
