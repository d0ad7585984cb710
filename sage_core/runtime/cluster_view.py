"""The cluster as placement sees it: the scheduler's workers plus the replicas of
running SAGE jobs (from the scheduler's ``sage-jobs`` board), and what one replica
holds on its worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sage_core.compiler.placement import ClusterView, WorkerView
from sage_core.compiler.plan import ExecutionPlan
from sage_core.runtime.scheduler_ext import install_on


def cluster_view(client: Any) -> ClusterView:
    """The cluster's workers as placement sees them, with the replicas of running
    SAGE jobs (from the scheduler's ``sage-jobs`` board) counted as resident."""
    if client.asynchronous:
        raise TypeError("use `await cluster_view_async(client)` with an async client")
    return client.sync(cluster_view_async, client)


async def cluster_view_async(client: Any) -> ClusterView:
    """``cluster_view`` for code running on the client's event loop."""
    await client.run_on_scheduler(install_on)
    info = await client.scheduler.identity(n_workers=-1)
    board = await client.scheduler.sage_resident()
    return view_of(info["workers"], board["resident"], board["lost"])


def view_of(
    workers: Mapping[str, Mapping[str, Any]],
    resident: Mapping[str, list[dict[str, Any]]],
    lost: list[str] | tuple[str, ...] = (),
) -> ClusterView:
    """A ClusterView from the scheduler's worker info and the board's residents."""
    out = []
    for address, w in sorted(workers.items(), key=lambda kv: str(kv[1].get("name"))):
        if address in lost:
            continue
        here = resident.get(address, [])
        used: dict[str, float] = {}
        for r in here:
            used["cpu"] = used.get("cpu", 0.0) + float(r["cpu"])
            for res, amount in r["resources"].items():
                used[res] = used.get(res, 0.0) + float(amount)
        top = max((r["priority"] for r in here), default=0)
        out.append(
            WorkerView(
                name=str(w.get("name", address)),
                address=address,
                threads=int(w.get("nthreads", 1)),
                resources=dict(w.get("resources") or {}),
                memory=int(w.get("memory_limit") or 0),
                replicas=tuple(r["replica"] for r in here),
                used=used,
                load={"priority": float(top)},
            )
        )
    return ClusterView(tuple(out))


def replica_demand(plan: ExecutionPlan, replica: str) -> dict[str, Any]:
    """CPU and named resources one replica holds (its chain's combined contract)."""
    rp = next(r for r in plan.replicas if r.id == replica)
    contracts = [plan.operator(op).contract for op in plan.task(rp.task).operators]
    resources: dict[str, float] = {}
    for c in contracts:
        for res, amount in c.required_resources().items():
            resources[res] = resources.get(res, 0.0) + amount
    return {"cpu": max(c.cpu for c in contracts), "resources": resources}
