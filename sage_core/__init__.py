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

__all__ = [
    "PluginConflict",
    "PluginError",
    "SageError",
    "UnknownPluginError",
    "__version__",
    "hookimpl",
]
