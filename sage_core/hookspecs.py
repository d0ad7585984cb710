"""Every hook SAGE calls. Plugins implement these with ``sage_core.hookimpl``.

All hooks are called with keyword arguments only. The ``register_*`` hooks are
collect-many: each implementation calls ``register(name, obj, **meta)`` once per thing it
provides and returns nothing. Names are lowercase strings such as ``"round-robin"``.
Specs may gain parameters in later versions; they never lose or rename one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from sage_core.llm.registry import EngineSpec

hookspec = pluggy.HookspecMarker("sage")
hookimpl = pluggy.HookimplMarker("sage")

Register = Callable[..., None]
"""``register(name: str, obj: object, **meta)``: adds one entry to a registry."""


@hookspec
def register_operators(register: Register) -> None:
    """Register dataflow operators.

    Called once per process by ``load_plugins()``. ``obj`` is a Function class (a
    subclass of one of SAGE's Function bases) or a factory returning one; ``meta`` may
    carry ``role=("source"|"map"|"filter"|"flat_map"|"co_map"|"join"|"sink")`` and a
    one-line ``description``.
    """


@hookspec
def register_schedulers(register: Register) -> None:
    """Register scheduling policies (replica placement and/or request ordering).

    ``obj`` is a policy class; ``meta`` carries ``scope=("placement"|"requests")``.
    """


@hookspec
def register_routers(register: Register) -> None:
    """Register routers choosing downstream replicas or engines for an item/request.

    ``obj`` is a router class; ``meta`` carries ``scope`` = ``"dataflow"``,
    ``"requests"`` or ``"any"``.
    """


@hookspec
def register_backends(register: Register) -> None:
    """Register inference backends (generation and embedding).

    ``obj`` is a backend class; ``meta`` carries ``capabilities`` (a tuple drawn from
    ``"generate"``, ``"chat"``, ``"embed"``).
    """


@hookspec
def register_vector_indexes(register: Register) -> None:
    """Register vector index implementations usable by name (``index="hnswlib"``).

    ``obj`` is a class implementing SAGE's vector-index interface.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands or groups to the ``sage`` command line.

    Called by ``sage_core.cli.main`` after plugins load, before the CLI parses argv.
    """


@hookspec
def register_dashboard_routes(register: Register) -> None:
    """Register pages served by the Dask dashboard of a SAGE scheduler.

    ``register(path, handler_class, **handler_kwargs)``: ``path`` is a tornado route
    such as ``"/sage/jobs"``; the handler receives ``dask_server=`` in ``initialize``.
    """


def hook_names() -> list[str]:
    """Names of every hook family declared here, sorted."""
    return sorted(
        name
        for name, obj in globals().items()
        if callable(obj) and hasattr(obj, "sage_spec")
    )


@hookspec(firstresult=True)
def launch_engine(
    entry: Mapping[str, Any],
) -> tuple[EngineSpec, Callable[[], object], float] | None:
    """Start the engine process of one ``managed`` entry of a gateway config.

    Called by the gateway at start-up, once per entry, in a worker thread; it must not
    wait for the engine to load. firstresult: return ``None`` when the entry is not
    yours (the built-in vLLM launcher of ``sage_plugins.engines`` takes entries whose
    ``launcher`` is ``"vllm"``, the default). Otherwise return the engine spec to
    register, a function that stops the process, and the ``time.monotonic()`` until
    which the engine may still be loading. Raise ``ConfigError`` for a malformed entry.
    """
