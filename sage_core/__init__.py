"""SAGE: declarative LLM inference pipelines compiled into execution plans on Dask."""

from __future__ import annotations

from importlib import import_module, metadata
from importlib.util import find_spec

from sage_core.common.errors import PluginConflict as PluginConflict
from sage_core.common.errors import PluginError as PluginError
from sage_core.common.errors import SageError as SageError
from sage_core.common.errors import UnknownPluginError as UnknownPluginError
from sage_core.hookspecs import hookimpl as hookimpl

try:
    __version__ = metadata.version("sage-dask")
except metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

#: what ``import sage_core`` defines itself; everything in ``sage_core.api.__all__``
#: (the DSL) is importable from here too, loaded on first use so that plain
#: ``import sage_core`` stays light for plugins and the CLI
_EAGER = (
    "PluginConflict",
    "PluginError",
    "SageError",
    "UnknownPluginError",
    "__version__",
    "hookimpl",
)


def _dsl_names() -> list[str]:
    api = import_module("sage_core.api")
    return list(api.__all__)


def __getattr__(name: str) -> object:
    if name == "__all__":
        return sorted({*_EAGER, *_dsl_names()})
    # a submodule not imported yet (``from sage_core import plugins``) is left to
    # the import system: loading the DSL here could import it circularly
    if name.startswith("__") or find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"module 'sage_core' has no attribute {name!r}")
    if name in _dsl_names():
        return getattr(import_module("sage_core.api"), name)
    raise AttributeError(f"module 'sage_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_dsl_names()})
