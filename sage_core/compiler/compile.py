"""Lowering a logical graph into an ExecutionPlan.

1. validate the graph (every problem at once, contracts against the cluster);
2. choose each edge's router: the edge's own, else ``key-hash`` on keyed edges, a
   one-to-one *forward* link when both ends have the same parallelism, else
   ``round-robin``;
3. chain consecutive stateless operators of equal parallelism joined by a forward
   edge (single output upstream, single input downstream, no batch wait (max_wait_ms)
   on the downstream operator) into one task, when ``settings.chaining`` is on;
4. materialise replicas (``task#i``) and, per edge between tasks, the downstream
   replicas each upstream replica sends to;
5. place every replica with the policy, recording its decision trace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sage_core import plugins
from sage_core.common.errors import SageError
from sage_core.compiler.placement import (
    ClusterView,
    LocalPlacement,
    PlacementPolicy,
    ReplicaDemand,
)
from sage_core.compiler.plan import (
    ChannelPlan,
    ExecutionPlan,
    OperatorPlan,
    ReplicaPlan,
    RuntimeSettings,
    TaskPlan,
)
from sage_core.contract import Contract
from sage_core.graph.model import Edge, GraphError, LogicalGraph, Problem
from sage_core.graph.refs import load_operator
from sage_core.graph.validate import effective_contract, validate

DEFAULT_ROUTERS = {"default": "round-robin", "keyed": "key-hash"}


def resolve_policy(
    policy: PlacementPolicy | str | None, **config: Any
) -> PlacementPolicy:
    """A placement policy instance from an instance, a plugin name or None (local).

    Raises:
        UnknownPluginError: no placement policy plugin has that name.
        SageError: the plugin of that name is not a PlacementPolicy.
    """
    if policy is None or policy == "local":
        return LocalPlacement(**config)
    if isinstance(policy, PlacementPolicy):
        return policy
    entry = plugins.resolve("placement-policy", policy)
    instance = entry.obj(**config)
    if not isinstance(instance, PlacementPolicy):
        raise SageError(f"placement policy {policy!r} is not a PlacementPolicy")
    return instance


def _edge_router(
    edge: Edge, graph: LogicalGraph, routers: Mapping[str, str]
) -> tuple[str, str]:
    """(router name, partition) of an edge."""
    if edge.router is not None:
        return edge.router, "routed"
    if edge.key is not None:
        return routers["keyed"], "routed"
    if graph.nodes[edge.src].parallelism == graph.nodes[edge.dst].parallelism:
        return routers["default"], "forward"
    return routers["default"], "routed"


def _chains(
    graph: LogicalGraph,
    order: list[str],
    contracts: Mapping[str, Contract],
    partitions: Mapping[int, str],
    enabled: bool,
) -> list[list[str]]:
    """Operator chains in topological order of their heads."""
    follow: dict[str, str] = {}
    if enabled:
        for i, edge in enumerate(graph.edges):
            src, dst = graph.nodes[edge.src], graph.nodes[edge.dst]
            dc = contracts[dst.name]
            if (
                partitions[i] == "forward"
                and edge.router is None
                and edge.key is None
                and len(graph.outputs(src.name)) == 1
                and len(graph.inputs(dst.name)) == 1
                and not contracts[src.name].stateful
                and not dc.stateful
                and dc.max_wait_ms == 0
                and dst.role not in ("join", "co_map")
            ):
                follow[src.name] = dst.name
    chained = set(follow.values())
    chains = []
    for name in order:
        if name in chained:
            continue
        chain = [name]
        while chain[-1] in follow:
            chain.append(follow[chain[-1]])
        chains.append(chain)
    return chains


def combined_contract(contracts: list[Contract]) -> Contract:
    head = contracts[0]
    resources: dict[str, float] = {}
    for c in contracts:
        for k, v in c.resources.items():
            resources[k] = resources.get(k, 0.0) + float(v)
    return head.merged(
        {
            "cpu": max(c.cpu for c in contracts),
            "gpu": sum(c.gpu for c in contracts),
            "memory": sum(c.memory for c in contracts),
            "resources": resources,
        }
    )


def compile_plan(
    graph: LogicalGraph,
    cluster: ClusterView | None = None,
    policy: PlacementPolicy | str | None = None,
    routers: Mapping[str, str] | None = None,
    *,
    settings: RuntimeSettings | None = None,
) -> ExecutionPlan:
    """Compile ``graph`` into a placed ExecutionPlan.

    Args:
        cluster: the workers to place on (default: this process).
        policy: placement policy instance or scheduler plugin name (default local).
        routers: default router names: ``{"default": ..., "keyed": ...}``.
        settings: runtime settings recorded in the plan.

    Raises:
        GraphError: the graph is invalid (all problems, each with its place).
        PlacementError: a replica fits on no worker.
    """
    cluster = cluster or ClusterView.local()
    settings = settings or RuntimeSettings()
    routers = {**DEFAULT_ROUTERS, **(routers or {})}
    bad_settings = settings.problems()
    problems = [Problem("settings", p) for p in bad_settings]
    problems += validate(graph, worker_resources=[w.resources for w in cluster.workers])
    if problems:
        raise GraphError(problems)
    place = resolve_policy(policy)

    objects = {n.name: load_operator(n.ref) for n in graph.nodes.values()}
    contracts = {
        name: effective_contract(graph.nodes[name], obj)
        for name, obj in objects.items()
    }
    for name, node in graph.nodes.items():
        if node.role == "join" and not contracts[name].stateful:
            contracts[name] = contracts[name].merged({"state": "stateful"})
    partitions: dict[int, str] = {}
    edge_routers: dict[int, str] = {}
    for i, edge in enumerate(graph.edges):
        edge_routers[i], partitions[i] = _edge_router(edge, graph, routers)

    order = graph.topological()
    chains = _chains(graph, order, contracts, partitions, settings.chaining)
    task_of: dict[str, str] = {}
    tasks: list[TaskPlan] = []
    for chain in chains:
        tname = "+".join(chain)
        for op in chain:
            task_of[op] = tname
        tasks.append(
            TaskPlan(tname, tuple(chain), int(graph.nodes[chain[0]].parallelism))
        )

    operators = []
    for name in order:
        node = graph.nodes[name]
        input_keys = {
            e.input_index: e.key for e in graph.inputs(name) if e.key is not None
        }
        operators.append(
            OperatorPlan(
                name=name,
                role=node.role,
                ref=node.ref,
                config=dict(node.config),
                parallelism=int(node.parallelism),
                contract=contracts[name],
                on_error=node.on_error,
                options=dict(node.options),
                input_keys=input_keys,
            )
        )

    demands: list[ReplicaDemand] = []
    capacities: dict[str, int] = {}
    for task in tasks:
        head = task.operators[0]
        combined = combined_contract([contracts[op] for op in task.operators])
        is_source = graph.nodes[head].role == "source"
        cap = (
            0
            if is_source
            else (contracts[head].queue_capacity or settings.queue_capacity)
        )
        for i in range(task.parallelism):
            rid = f"{task.name}#{i}"
            capacities[rid] = cap
            demands.append(ReplicaDemand(rid, task.name, i, task.operators, combined))
    decisions = place.place(demands, cluster)
    replicas = tuple(
        ReplicaPlan(d.replica, d.task, d.index, capacities[d.replica], dec)
        for d, dec in zip(demands, decisions, strict=True)
    )

    channels = []
    for i, edge in enumerate(graph.edges):
        src_task, dst_task = task_of[edge.src], task_of[edge.dst]
        if src_task == dst_task:
            continue  # chained: runs inside one replica
        src_p = int(graph.nodes[edge.src].parallelism)
        dst_p = int(graph.nodes[edge.dst].parallelism)
        dsts = [f"{dst_task}#{j}" for j in range(dst_p)]
        routes = tuple(
            (
                f"{src_task}#{k}",
                (dsts[k],) if partitions[i] == "forward" else tuple(dsts),
            )
            for k in range(src_p)
        )
        channels.append(
            ChannelPlan(
                id=f"{edge.src}->{edge.dst}"
                + (f"@{edge.input_index}" if edge.input_index else ""),
                src=edge.src,
                dst=edge.dst,
                src_task=src_task,
                dst_task=dst_task,
                input_index=edge.input_index,
                router=edge_routers[i],
                router_config=dict(edge.router_config),
                partition=partitions[i],
                key=edge.key,
                routes=routes,
            )
        )
    return ExecutionPlan(
        job=graph.name,
        policy=place.name or type(place).__name__,
        settings=settings,
        operators=tuple(operators),
        tasks=tuple(tasks),
        replicas=replicas,
        channels=tuple(channels),
    )


def replan(
    plan: ExecutionPlan,
    cluster: ClusterView,
    policy: PlacementPolicy | str | None = None,
) -> ExecutionPlan:
    """``plan`` with every replica placed again on ``cluster`` (a recovery after a
    lost worker: the cluster without it) by ``policy`` (default: the plan's).

    Raises:
        PlacementError: a replica fits on no worker of ``cluster`` (its resource
            contract names what it waits for).
    """
    place = resolve_policy(policy if policy is not None else plan.policy)
    demands = [
        ReplicaDemand(
            r.id,
            r.task,
            r.index,
            plan.task(r.task).operators,
            combined_contract(
                [plan.operator(o).contract for o in plan.task(r.task).operators]
            ),
        )
        for r in plan.replicas
    ]
    decisions = place.place(demands, cluster)
    replicas = tuple(
        dataclasses.replace(r, placement=d)
        for r, d in zip(plan.replicas, decisions, strict=True)
    )
    return dataclasses.replace(plan, replicas=replicas)
