"""Validation of a logical graph: every problem at once, each with its node or edge.

Checks: names, roles, parallelism, error policy, that every operator reference
resolves (unknown plugins list close matches) and fits its role, contracts, dangling
or missing inputs, input indices of two-input operators, routers and keys, cycles
without an explicit feedback edge, and (given the workers' resources) contracts no
worker can satisfy.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from sage_core import plugins
from sage_core.common.errors import SageError, UnknownPluginError
from sage_core.contract import Contract, ContractError
from sage_core.functions import ByRole, Function
from sage_core.graph.model import (
    ON_ERROR,
    ROLES,
    TWO_INPUT_ROLES,
    GraphError,
    LogicalGraph,
    Node,
    Problem,
    cycle_message,
)
from sage_core.graph.refs import declared_role, for_role, load_key, load_operator

DATAFLOW_ROUTER_SCOPES = ("dataflow", "any")


def base_contract(obj: Any, config: Mapping[str, Any] | None = None) -> Contract:
    """The contract an implementation declares for ``config`` (Function classes,
    through ``contract_for``), else default."""
    if inspect.isclass(obj) and issubclass(obj, Function):
        return obj.contract_for(config or {})
    return Contract()


def effective_contract(node: Node, obj: Any) -> Contract:
    """The implementation's contract for the node's config, with the node's
    overrides applied."""
    declared = base_contract(for_role(obj, node.role), node.config)
    return declared.merged(node.contract or None)


def _check_node(node: Node, where: str, out: list[Problem]) -> Any:
    """Node-local checks; returns the resolved implementation or None."""
    if node.role not in ROLES:
        out.append(
            Problem(
                f"{where}.role",
                f"unknown role {node.role!r}; one of {', '.join(ROLES)}",
            )
        )
    p = node.parallelism
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        out.append(
            Problem(f"{where}.parallelism", f"must be an integer >= 1, got {p!r}")
        )
    if node.on_error not in ON_ERROR:
        out.append(
            Problem(
                f"{where}.on_error",
                f"must be one of {', '.join(ON_ERROR)}, got {node.on_error!r}",
            )
        )
    try:
        obj = load_operator(node.ref)
    except UnknownPluginError as exc:
        out.append(Problem(f"{where}.operator", str(exc)))
        return None
    except SageError as exc:
        out.append(Problem(f"{where}.operator", str(exc)))
        return None
    if isinstance(obj, ByRole):
        if node.role not in obj.roles:
            out.append(
                Problem(
                    f"{where}.operator",
                    f"{node.ref.describe()} has no {node.role} variant "
                    f"(it is a {' or a '.join(obj.roles)})",
                )
            )
            return None
        obj = obj.for_role(node.role)
    role = declared_role(obj, node.ref)
    if role is not None and node.role in ROLES and role != node.role:
        out.append(
            Problem(
                f"{where}.operator",
                f"{node.ref.describe()} is a {role} operator, used as a {node.role}",
            )
        )
    elif node.ref.kind == "inline" and node.role == "co_map" and isinstance(obj, tuple):
        if len(obj) != 2 or not all(callable(f) for f in obj):
            out.append(Problem(f"{where}.operator", "co_map takes two callables"))
    elif not callable(obj):
        out.append(
            Problem(f"{where}.operator", f"{node.ref.describe()} is not callable")
        )
    try:
        effective_contract(node, obj)
    except ContractError as exc:
        out.append(Problem(f"{where}.contract", str(exc)))
    if node.role == "join":
        for opt in ("window", "window_s"):
            value = node.options.get(opt)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value <= 0
            ):
                out.append(
                    Problem(f"{where}.{opt}", f"must be a number > 0, got {value!r}")
                )
    return obj


def _check_router(
    edge_where: str, router: str, keyed: bool, out: list[Problem]
) -> None:
    try:
        entry = plugins.resolve("router", router, scope="dataflow")
    except UnknownPluginError as exc:
        out.append(Problem(f"{edge_where}.router", str(exc)))
        return
    scope = entry.meta.get("scope", "dataflow")
    if scope not in DATAFLOW_ROUTER_SCOPES:
        out.append(
            Problem(
                f"{edge_where}.router",
                f"router {router!r} routes {scope} only, not dataflow items",
            )
        )
    if getattr(entry.obj, "keyed", False) and not keyed:
        out.append(
            Problem(
                f"{edge_where}.router",
                f"router {router!r} needs a key: use key_by(...) or key:",
            )
        )


def validate(
    graph: LogicalGraph,
    *,
    worker_resources: Sequence[Mapping[str, float]] | None = None,
) -> list[Problem]:
    """Every problem of ``graph``; empty when it is valid.

    Args:
        worker_resources: the resources each worker offers (``{"GPU": 1}``); when
            given, contracts needing a resource no worker has are problems.
    """
    out: list[Problem] = []
    for name in graph.duplicates:
        out.append(Problem(f"operator {name!r}", "name used more than once"))
    if not graph.nodes:
        out.append(Problem("pipeline", "has no operators"))
        return out
    if not graph.sources():
        out.append(
            Problem("pipeline", "has no source (use from_source/from_collection)")
        )
    resolved: dict[str, Any] = {}
    for node in graph.nodes.values():
        resolved[node.name] = _check_node(node, f"operator {node.name!r}", out)

    for i, edge in enumerate(graph.edges):
        where = f"edge {i} ({edge.src} -> {edge.dst})"
        for end, label in ((edge.src, "from"), (edge.dst, "to")):
            if end not in graph.nodes:
                out.append(Problem(f"{where}.{label}", f"no operator named {end!r}"))
        if edge.src in graph.nodes and graph.nodes[edge.src].role == "sink":
            out.append(Problem(where, f"sink {edge.src!r} has no outputs"))
        if edge.feedback:
            out.append(
                Problem(
                    where,
                    "feedback edges (iterations) are not executed by this version's "
                    "runtimes; restructure the pipeline without the loop",
                )
            )
        if edge.router is not None:
            _check_router(where, edge.router, edge.key is not None, out)
        if edge.key is not None:
            try:
                load_key(edge.key)
            except SageError as exc:
                out.append(Problem(f"{where}.key", str(exc)))

    for node in graph.nodes.values():
        where = f"operator {node.name!r}"
        inputs = graph.inputs(node.name)
        indices = sorted({e.input_index for e in inputs})
        if node.role == "source":
            if inputs:
                out.append(Problem(where, "a source has no inputs"))
            continue
        if not inputs:
            out.append(
                Problem(
                    f"{where}.inputs",
                    "has no input: connect it to an upstream operator",
                )
            )
            continue
        if node.role in TWO_INPUT_ROLES:
            if indices != [0, 1]:
                out.append(
                    Problem(
                        f"{where}.inputs",
                        f"a {node.role} needs inputs 0 and 1, got {indices}",
                    )
                )
            if node.role == "join":
                for e in inputs:
                    if e.key is None:
                        out.append(
                            Problem(
                                f"{where}.inputs",
                                f"join input from {e.src!r} is not keyed: key_by(...) both sides",
                            )
                        )
        elif indices != [0]:
            out.append(
                Problem(
                    f"{where}.inputs", f"a {node.role} has one input (0), got {indices}"
                )
            )

    cycle = graph.find_cycle()
    if cycle:
        out.append(Problem("edges", cycle_message(cycle)))

    if worker_resources is not None:
        for node in graph.nodes.values():
            obj = resolved.get(node.name)
            if obj is None:
                continue
            try:
                needed = effective_contract(node, obj).required_resources()
            except ContractError:
                continue
            for res, amount in needed.items():
                best = max(
                    (float(w.get(res, 0.0)) for w in worker_resources), default=0.0
                )
                if best < amount:
                    offered = best if best else "none"
                    out.append(
                        Problem(
                            f"operator {node.name!r}.contract",
                            f"needs {res}={amount:g} per replica but the largest worker "
                            f"offers {offered}; start a worker with --resources "
                            f'"{res}={amount:g}" or lower the contract',
                        )
                    )
    return out


def check(
    graph: LogicalGraph,
    *,
    worker_resources: Sequence[Mapping[str, float]] | None = None,
) -> None:
    """Raise GraphError listing every problem of ``graph``, if there is any."""
    problems = validate(graph, worker_resources=worker_resources)
    if problems:
        raise GraphError(problems)
