"""Placement decisions replayed under another policy.

The cluster a job was placed on is rebuilt from its first recorded decision (every
candidate worker with its free resources, the CPU its resident replicas asked for and
how many there were), the demands from the plan's contracts; the other policy then
places the same demands on that view, decision by decision. Live load figures a
policy may weigh (``WorkerView.load``) are not recorded, so policies reading them see
none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sage_core.compiler.compile import combined_contract, resolve_policy
from sage_core.compiler.placement import ClusterView, ReplicaDemand, WorkerView
from sage_core.contract import Contract
from sage_core.diagnosis.model import DiagnosisError


def recorded_cluster(record: Mapping[str, Any]) -> ClusterView:
    """The workers as the first placement decision of the job saw them."""
    reps = record["plan"]["replicas"]
    if not reps:
        raise DiagnosisError(f"job {record.get('job')} has no replicas to replay")
    first = reps[0]["placement"]
    workers = []
    for c in first["candidates"]:
        free = dict(c["free"])
        in_use = float(c.get("cpu_in_use", 0.0))
        threads = max(1, round(free.pop("cpu", 0.0) + in_use))
        free.pop("memory", None)
        workers.append(
            WorkerView(
                name=c["worker"],
                threads=threads,
                resources=free,
                replicas=tuple(f"resident-{i}" for i in range(int(c["replicas"]))),
                used={"cpu": in_use} if in_use else {},
            )
        )
    return ClusterView(tuple(workers))


def demands(
    plan: Mapping[str, Any],
    parallelism: Mapping[str, int] | None = None,
    priority: int = 0,
) -> list[ReplicaDemand]:
    """One demand per replica of ``plan`` (tasks resized by ``parallelism``)."""
    contracts = {
        o["name"]: Contract.from_dict(o["contract"]) for o in plan["operators"]
    }
    out = []
    for t in plan["tasks"]:
        combined = combined_contract([contracts[op] for op in t["operators"]])
        n = (parallelism or {}).get(t["name"], t["parallelism"])
        ops = tuple(t["operators"])
        out += [
            ReplicaDemand(f"{t['name']}#{i}", t["name"], i, ops, combined, priority)
            for i in range(n)
        ]
    return out


def place(
    plan: Mapping[str, Any],
    cluster: ClusterView,
    policy: str,
    *,
    parallelism: Mapping[str, int] | None = None,
    priority: int = 0,
) -> list[dict[str, Any]]:
    """The decisions of ``policy`` (a plugin name) for ``plan`` on ``cluster``.

    Raises:
        DiagnosisError: unknown policy, or it placed nothing.
    """
    from sage_core.common.errors import SageError

    try:
        chosen = resolve_policy(policy, priority=priority)
        decided = chosen.place(demands(plan, parallelism, priority), cluster)
    except SageError as exc:
        raise DiagnosisError(f"policy {policy!r} cannot place this job: {exc}") from exc
    return [d.to_dict() for d in decided]


def replay(record: Mapping[str, Any], policy: str) -> list[dict[str, Any]]:
    """Each recorded decision next to ``policy``'s on the same view and demands:
    ``{replica, recorded, replayed, changed, reason}``."""
    plan = record["plan"]
    again = place(
        plan,
        recorded_cluster(record),
        policy,
        priority=int(record.get("priority", 0)),
    )
    by_id = {d["replica"]: d for d in again}
    rows = []
    for rep in plan["replicas"]:
        new = by_id[rep["id"]]
        rows.append(
            {
                "replica": rep["id"],
                "recorded": rep["placement"]["worker"],
                "replayed": new["worker"],
                "changed": new["worker"] != rep["placement"]["worker"],
                "reason": new["reason"],
            }
        )
    return rows


def workers_named(names: Sequence[str], threads: int) -> ClusterView:
    """A view of idle workers ``names`` with ``threads`` threads each."""
    return ClusterView(tuple(WorkerView(name=n, threads=threads) for n in names))
