"""Changing a running plan's replica count of one operator, in place.

``grow`` adds one replica to an operator's task: it is placed by the plan's policy
next to the replicas already there (its decision trace is recorded like the
others'), every upstream replica gains it as a candidate of its router and it sends
where its siblings send. ``shrink`` takes the highest-numbered replica out: the
upstream replicas stop routing to it, it finishes what it holds and ends like any
replica at end of stream. Neither touches another operator's replicas, so an
engine loaded by a neighbouring operator stays loaded.

Only a task that is safe to split differently mid-stream can change
(``check_rescalable``): one stateless one-input operator (a map, filter or
flat_map), not a source or a sink, fed over un-keyed channels, with checkpoints
off. A forward channel (replica i to replica i) into or out of it becomes a routed
one for the replicas that change. Anything else raises ``RescaleError``; a caller
that must change it anyway starts the job again at the new parallelism.
"""

from __future__ import annotations

import dataclasses

from sage_core.common.errors import SageError
from sage_core.compiler.compile import combined_contract, resolve_policy
from sage_core.compiler.placement import (
    ClusterView,
    Ledger,
    PlacementError,
    ReplicaDemand,
)
from sage_core.compiler.plan import ChannelPlan, ExecutionPlan, ReplicaPlan

#: operator roles whose replicas may be added or retired while the job runs
RESCALABLE_ROLES = ("map", "filter", "flat_map")


class RescaleError(SageError, ValueError):
    """An operator's replica count cannot change while its job runs (the message
    says why)."""


def task_of(plan: ExecutionPlan, operator: str) -> str:
    """The task whose replicas run ``operator``.

    Raises:
        RescaleError: the plan has no such operator.
    """
    for t in plan.tasks:
        if operator in t.operators:
            return t.name
    names = ", ".join(op.name for op in plan.operators)
    raise RescaleError(f"no operator {operator!r} in the plan; operators: {names}")


def check_rescalable(plan: ExecutionPlan, operator: str) -> str:
    """The task of ``operator`` when its replica count can change in place.

    Raises:
        RescaleError: it cannot (see the module docstring), with the reason.
    """
    task = task_of(plan, operator)
    ops = plan.task(task).operators
    why = ""
    if len(ops) > 1:
        why = (
            f"it runs chained with {', '.join(o for o in ops if o != operator)} "
            f"(compile with chaining off, setting chaining: false, to scale it)"
        )
    elif plan.operator(operator).role not in RESCALABLE_ROLES:
        why = f"it is a {plan.operator(operator).role}, not a map, filter or flat_map"
    elif plan.operator(operator).contract.stateful:
        why = "it is stateful (its state is split by key across replicas)"
    elif plan.settings.checkpoint_interval_s is not None:
        why = "the job takes checkpoints (barrier alignment counts its replicas)"
    elif any(ch.key is not None for ch in plan.inputs_of(task)):
        why = "its input is keyed (a new replica would move keys between replicas)"
    if why:
        raise RescaleError(f"{operator!r} cannot change replicas in place: {why}")
    return task


def grow(
    plan: ExecutionPlan,
    operator: str,
    cluster: ClusterView,
    *,
    index: int | None = None,
) -> tuple[ExecutionPlan, str]:
    """``plan`` with one more replica of ``operator``, and that replica's id.

    Args:
        cluster: where the replica may go (the plan's policy chooses).
        index: the new replica's number (default: one past the highest in the
            plan; a job passes one past every number it ever used, so a retired
            replica's id is never reused).

    Raises:
        RescaleError: the operator cannot change in place.
        PlacementError: no worker fits the new replica.
    """
    task = check_rescalable(plan, operator)
    siblings = plan.replicas_of(task)
    if index is None:
        index = max(r.index for r in siblings) + 1
    rid = f"{task}#{index}"
    if any(r.id == rid for r in plan.replicas):
        raise RescaleError(f"replica {rid} already exists")
    place = resolve_policy(plan.policy)
    ledger = Ledger(cluster)
    known = {r for w in cluster.workers for r in w.replicas}
    for r in plan.replicas:
        if r.id not in known and r.placement.worker in ledger.workers:
            ledger.assign(r.placement.worker, _demand(plan, r))
    demand = _demand(plan, ReplicaPlan(rid, task, index, 0, siblings[0].placement))
    decision = place.place_one(demand, ledger)
    if decision is None:
        removed = ledger.resource_filter(demand).removed
        why = "; ".join(f"{w}: {r}" for w, r in removed.items()) or "no worker"
        raise PlacementError(f"no worker for a new replica {rid} ({why})")
    new = ReplicaPlan(rid, task, index, siblings[0].queue_capacity, decision)
    channels = []
    for ch in plan.channels:
        if ch.dst_task == task:
            routes = tuple((src, (*dsts, rid)) for src, dsts in ch.routes)
            ch = dataclasses.replace(ch, routes=routes, partition="routed")
        elif ch.src_task == task:
            everyone = tuple(r.id for r in plan.replicas_of(ch.dst_task))
            ch = dataclasses.replace(
                ch, routes=(*ch.routes, (rid, everyone)), partition="routed"
            )
        channels.append(ch)
    return _with(plan, task, (*plan.replicas, new), channels), rid


def shrink(plan: ExecutionPlan, operator: str) -> tuple[ExecutionPlan, str]:
    """``plan`` without the highest-numbered replica of ``operator``, and its id.

    Raises:
        RescaleError: the operator cannot change in place, has one replica left,
            or an upstream replica would be left with nowhere to send, or a
            downstream one with no sender.
    """
    task = check_rescalable(plan, operator)
    siblings = plan.replicas_of(task)
    if len(siblings) < 2:
        raise RescaleError(f"{operator!r} has one replica; it cannot have fewer")
    rid = max(siblings, key=lambda r: r.index).id
    channels: list[ChannelPlan] = []
    for ch in plan.channels:
        if ch.dst_task == task:
            routes = []
            for src, dsts in ch.routes:
                left = tuple(d for d in dsts if d != rid)
                if not left:
                    raise RescaleError(
                        f"retiring {rid} would leave {src} nowhere to send on {ch.id}"
                    )
                routes.append((src, left))
            ch = dataclasses.replace(ch, routes=tuple(routes))
        elif ch.src_task == task:
            routes = [(s, d) for s, d in ch.routes if s != rid]
            fed = {d for _, dsts in routes for d in dsts}
            orphan = [r.id for r in plan.replicas_of(ch.dst_task) if r.id not in fed]
            if orphan:
                raise RescaleError(
                    f"retiring {rid} would leave {', '.join(orphan)} with no "
                    f"sender on {ch.id}"
                )
            ch = dataclasses.replace(ch, routes=tuple(routes))
        channels.append(ch)
    replicas = tuple(r for r in plan.replicas if r.id != rid)
    return _with(plan, task, replicas, channels), rid


def _demand(plan: ExecutionPlan, r: ReplicaPlan) -> ReplicaDemand:
    ops = plan.task(r.task).operators
    contract = combined_contract([plan.operator(o).contract for o in ops])
    return ReplicaDemand(r.id, r.task, r.index, ops, contract)


def _with(
    plan: ExecutionPlan,
    task: str,
    replicas: tuple[ReplicaPlan, ...],
    channels: list[ChannelPlan],
) -> ExecutionPlan:
    n = sum(1 for r in replicas if r.task == task)
    tasks = tuple(
        dataclasses.replace(t, parallelism=n) if t.name == task else t
        for t in plan.tasks
    )
    ops = plan.task(task).operators
    operators = tuple(
        dataclasses.replace(op, parallelism=n) if op.name in ops else op
        for op in plan.operators
    )
    return dataclasses.replace(
        plan,
        tasks=tasks,
        operators=operators,
        replicas=replicas,
        channels=tuple(channels),
    )


def check_count(replicas: int) -> None:
    """Raises RescaleError unless ``replicas`` is a replica count (at least 1)."""
    if replicas < 1:
        raise RescaleError(f"an operator needs at least 1 replica, got {replicas}")


def next_step(plan: ExecutionPlan, operator: str, replicas: int) -> tuple[str, bool]:
    """The next one-replica change towards ``replicas`` replicas of ``operator``:
    (its task, True to add one / False to retire one); the task is ``""`` when
    it has ``replicas`` already.

    Raises:
        RescaleError: the operator cannot change in place.
    """
    task = check_rescalable(plan, operator)
    now = len(plan.replicas_of(task))
    return (task if now != replicas else ""), now < replicas


def next_index(plan: ExecutionPlan, task: str, highest: dict[str, int]) -> int:
    """The number of ``task``'s next new replica: one past every number it used so
    far (``highest``, updated here: retired replicas' numbers are not reused)."""
    used = [r.index for r in plan.replicas_of(task)]
    index = max([highest.get(task, -1), *used]) + 1
    highest[task] = index
    return index


def feeds(plan: ExecutionPlan, replica: str) -> dict[str, set[str]]:
    """The replicas that send to ``replica``, each with the channels it uses."""
    task = next(r.task for r in plan.replicas if r.id == replica)
    out: dict[str, set[str]] = {}
    for ch in plan.inputs_of(task):
        for src, dsts in ch.routes:
            if replica in dsts:
                out.setdefault(src, set()).add(ch.id)
    return out


def fed_by(plan: ExecutionPlan, replica: str) -> dict[str, int]:
    """The replicas ``replica`` sends to, each with the number of channels (the
    end-of-stream markers it owes them)."""
    task = next(r.task for r in plan.replicas if r.id == replica)
    out: dict[str, int] = {}
    for ch in plan.outputs_of(task):
        for d in dict(ch.routes).get(replica, ()):
            out[d] = out.get(d, 0) + 1
    return out
