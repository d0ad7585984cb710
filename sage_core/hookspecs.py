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
def register_placement_policies(register: Register) -> None:
    """Register replica placement policies (``sage run --policy NAME``,
    ``DaskEnvironment(policy=NAME)``).

    ``obj`` is a ``sage_core.compiler.placement.PlacementPolicy`` subclass; ``meta`` may
    carry a one-line ``description``.
    """


@hookspec
def register_admission_policies(register: Register) -> None:
    """Register job admission policies (the scheduler's job manager, ``sage jobs
    admission NAME``).

    ``obj`` is a ``sage_core.runtime.admission.AdmissionPolicy`` subclass; ``meta``
    may carry a one-line ``description``.
    """


@hookspec
def register_request_policies(register: Register) -> None:
    """Register request-ordering policies of the LLM control plane (the gateway's
    ``policy``).

    ``obj`` is a ``sage_core.llm.scheduling.RequestPolicy`` subclass; ``meta`` may
    carry a one-line ``description``.
    """


@hookspec(
    warn_on_impl=DeprecationWarning(
        "the register_schedulers hook is deprecated: implement "
        "register_placement_policies and/or register_request_policies instead"
    )
)
def register_schedulers(register: Register) -> None:
    """Deprecated: use ``register_placement_policies`` / ``register_request_policies``.

    Still honoured: an entry with ``scope="placement"`` becomes a placement policy,
    ``scope="requests"`` a request policy, and one without a scope (or ``"any"``)
    both. Implementing it warns with a DeprecationWarning.
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
def register_tools(register: Register) -> None:
    """Register tools agents may call (``tools=["calculator", ...]``).

    ``obj`` is a ``sage_core.tools.Tool`` (name, description, JSON schema of the
    arguments, callable, ``ToolContract``) or a factory ``make(**config) -> Tool``;
    ``meta`` may carry a one-line ``description``.
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
