"""How the master reaches a job's replica actors: where each replica runs
(``addresses_of``) and awaited actor calls (``call_actor``)."""

from __future__ import annotations

import asyncio
from typing import Any

from sage_core.common.errors import SageError
from sage_core.compiler.plan import ExecutionPlan


class ReplicaStartError(SageError):
    """A replica actor could not be created, wired or opened on its worker."""


def addresses_of(plan: ExecutionPlan, workers: dict[str, Any]) -> dict[str, str]:
    """Each replica's worker address (``workers``: the scheduler's worker info).

    Raises:
        ReplicaStartError: a replica is placed on a worker the cluster lacks.
    """
    by_name = {str(w.get("name", a)): a for a, w in workers.items()}
    by_name.update({a: a for a in workers})
    out = {}
    for r in plan.replicas:
        address = by_name.get(r.placement.worker)
        if address is None:
            raise ReplicaStartError(
                f"replica {r.id} is placed on worker {r.placement.worker!r}, "
                f"which this cluster does not have (workers: "
                f"{', '.join(sorted(by_name))}); compile against this cluster"
            )
        out[r.id] = address
    return out


def retrieve(fut: asyncio.Future[Any]) -> None:
    """Done callback: mark a future's exception retrieved (it is reported elsewhere)."""
    if not fut.cancelled():
        fut.exception()


async def call_actor(actor: Any, method: str, *args: Any) -> Any:
    """``await actor.method(*args)``; a lost actor raises here, not at attribute
    access."""
    return await getattr(actor, method)(*args)
