"""The placement interface: which worker hosts each replica, and why.

A ``PlacementPolicy`` receives the replicas to place (``ReplicaDemand``: contract,
operators, priority) and a ``ClusterView`` (workers with their threads, resources and
the replicas already resident on them). It returns one ``PlacementDecision`` per
replica with a decision trace: every candidate worker with its free resources at that
moment, the filters that removed candidates and why, the scores of the survivors and
the choice. Policies are plugins (``register_placement_policies``);
``LocalPlacement`` is the built-in for one process, where the only candidate is "this
process".

Policies place replicas one after another through a ``Ledger``, which counts what
earlier decisions (and resident replicas) already use, since Dask releases resource
restrictions once an actor has started.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from sage_core.common.errors import SageError
from sage_core.contract import Contract


class PlacementError(SageError):
    """Some replicas fit on no worker; the message names each and the reason."""


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker as placement sees it.

    Attributes:
        name: worker name (``"local"`` in-process).
        address: where it listens (empty in-process).
        threads: threads the worker runs tasks on.
        resources: declared resource totals (``{"GPU": 1}``).
        memory: bytes of memory (0: unknown).
        replicas: ids of replicas already resident on it (from running jobs).
        used: resources those resident replicas hold (``cpu`` counts threads).
        load: live measurements a policy may weigh (``priority``: the highest
            priority of a job resident there; ``queue_depth``, ``cpu``: recent use).
    """

    name: str
    address: str = ""
    threads: int = 1
    resources: Mapping[str, float] = field(default_factory=dict)
    memory: int = 0
    replicas: tuple[str, ...] = ()
    used: Mapping[str, float] = field(default_factory=dict)
    load: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The workers a plan may be placed on."""

    workers: tuple[WorkerView, ...]

    @classmethod
    def local(
        cls, resources: Mapping[str, float] | None = None, threads: int | None = None
    ) -> ClusterView:
        """The in-process view: one worker, ``"local"``."""
        return cls(
            (
                WorkerView(
                    name="local",
                    threads=threads or os.cpu_count() or 1,
                    resources=dict(resources or {}),
                ),
            )
        )


@dataclass(frozen=True, slots=True)
class ReplicaDemand:
    """One replica to place: what it needs."""

    replica: str
    task: str
    index: int
    operators: tuple[str, ...]
    contract: Contract
    priority: int = 0


@dataclass(frozen=True, slots=True)
class CandidateTrace:
    """A worker considered for a replica, with its free capacity at that moment.

    ``free`` never goes below 0; ``cpu_in_use`` is the CPU (threads) the worker's
    replicas ask for, which exceeds its threads when it is oversubscribed.
    """

    worker: str
    free: Mapping[str, float]
    replicas: int
    score: float | None = None
    cpu_in_use: float = 0.0


@dataclass(frozen=True, slots=True)
class FilterTrace:
    """One filter a policy applied: which workers it removed, and why."""

    name: str
    removed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    """The placement of one replica with its decision trace."""

    replica: str
    worker: str
    policy: str
    candidates: tuple[CandidateTrace, ...] = ()
    filters: tuple[FilterTrace, ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "worker": self.worker,
            "policy": self.policy,
            "candidates": [
                {
                    "worker": c.worker,
                    "free": dict(c.free),
                    "replicas": c.replicas,
                    "score": c.score,
                    "cpu_in_use": c.cpu_in_use,
                }
                for c in self.candidates
            ],
            "filters": [
                {"name": f.name, "removed": dict(f.removed)} for f in self.filters
            ],
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlacementDecision:
        return cls(
            replica=data["replica"],
            worker=data["worker"],
            policy=data["policy"],
            candidates=tuple(
                CandidateTrace(
                    c["worker"],
                    dict(c["free"]),
                    int(c["replicas"]),
                    c["score"],
                    float(c.get("cpu_in_use", 0.0)),
                )
                for c in data["candidates"]
            ),
            filters=tuple(
                FilterTrace(f["name"], dict(f["removed"])) for f in data["filters"]
            ),
            reason=data.get("reason", ""),
        )


class Ledger:
    """Running account of what each worker has left while replicas are placed."""

    def __init__(self, cluster: ClusterView) -> None:
        self.workers = {w.name: w for w in cluster.workers}
        self.used: dict[str, dict[str, float]] = {
            w.name: dict(w.used) for w in cluster.workers
        }
        self.resident: dict[str, list[str]] = {
            w.name: list(w.replicas) for w in cluster.workers
        }

    def free(self, worker: str) -> dict[str, float]:
        """Free amount of every resource of ``worker``, plus ``cpu`` (threads); 0
        when replicas ask for more than it has (see ``cpu_in_use``)."""
        w = self.workers[worker]
        used = self.used[worker]
        totals = {
            "cpu": float(w.threads),
            **{k: float(v) for k, v in w.resources.items()},
        }
        if w.memory:
            totals["memory"] = float(w.memory)
        return {k: max(0.0, v - used.get(k, 0.0)) for k, v in totals.items()}

    def cpu_in_use(self, worker: str) -> float:
        """CPU (threads) the replicas on ``worker`` ask for; may exceed its threads."""
        return self.used[worker].get("cpu", 0.0)

    def candidates(self) -> list[CandidateTrace]:
        return [
            CandidateTrace(
                name,
                self.free(name),
                len(self.resident[name]),
                cpu_in_use=self.cpu_in_use(name),
            )
            for name in self.workers
        ]

    def resource_filter(self, demand: ReplicaDemand) -> FilterTrace:
        """Removes workers lacking a resource the contract needs (GPU, memory, named
        resources). CPU is not filtered here; policies may filter on ``free["cpu"]``."""
        removed: dict[str, str] = {}
        needs = dict(demand.contract.required_resources())
        if demand.contract.memory:
            needs["memory"] = float(demand.contract.memory)
        for name in self.workers:
            free = self.free(name)
            for res, amount in needs.items():
                if res == "memory" and not self.workers[name].memory:
                    continue  # memory not declared by the worker: not limiting
                have = free.get(res, 0.0)
                if have + 1e-9 < amount:
                    removed[name] = f"needs {res}={amount:g}, has {have:g} free"
                    break
        return FilterTrace("resources", removed)

    def assign(self, worker: str, demand: ReplicaDemand) -> None:
        used = self.used[worker]
        used["cpu"] = used.get("cpu", 0.0) + demand.contract.cpu
        for res, amount in demand.contract.required_resources().items():
            used[res] = used.get(res, 0.0) + amount
        if demand.contract.memory:
            used["memory"] = used.get("memory", 0.0) + demand.contract.memory
        self.resident[worker].append(demand.replica)


class PlacementPolicy:
    """Base of placement policies. Subclasses implement ``place_one``.

    ``place`` calls ``place_one`` for each demand in order (highest ``priority``
    first, then plan order) with a shared ``Ledger``, and raises one
    ``PlacementError`` listing every replica that fits nowhere.
    """

    name: ClassVar[str] = ""

    def __init__(self, **config: Any) -> None:
        self.config = config

    def order(self, demands: Sequence[ReplicaDemand]) -> list[ReplicaDemand]:
        return sorted(demands, key=lambda d: -d.priority)

    def place(
        self, demands: Sequence[ReplicaDemand], cluster: ClusterView
    ) -> list[PlacementDecision]:
        """One decision per demand, in the order of ``demands``.

        Raises:
            PlacementError: one or more replicas fit on no worker.
        """
        if not cluster.workers:
            raise PlacementError("the cluster has no workers to place replicas on")
        ledger = Ledger(cluster)
        decided: dict[str, PlacementDecision] = {}
        failures: list[str] = []
        for demand in self.order(demands):
            decision = self.place_one(demand, ledger)
            if decision is None:
                reasons = ledger.resource_filter(demand).removed
                why = "; ".join(f"{w}: {r}" for w, r in reasons.items()) or "no worker"
                failures.append(f"{demand.replica} ({why})")
                continue
            ledger.assign(decision.worker, demand)
            decided[demand.replica] = decision
        if failures:
            raise PlacementError(
                f"policy {self.name!r} found no worker for {len(failures)} "
                f"replica(s): " + ", ".join(failures)
            )
        return [decided[d.replica] for d in demands]

    def place_one(
        self, demand: ReplicaDemand, ledger: Ledger
    ) -> PlacementDecision | None:
        """The decision for one replica, or None when no worker fits."""
        raise TypeError(f"{type(self).__name__} must implement place_one()")


class LocalPlacement(PlacementPolicy):
    """Everything in this process; only resource contracts can rule it out."""

    name = "local"

    def place_one(
        self, demand: ReplicaDemand, ledger: Ledger
    ) -> PlacementDecision | None:
        candidates = ledger.candidates()
        resources = ledger.resource_filter(demand)
        left = [c for c in candidates if c.worker not in resources.removed]
        if not left:
            return None
        chosen = left[0]
        return PlacementDecision(
            replica=demand.replica,
            worker=chosen.worker,
            policy=self.name,
            candidates=tuple(
                replace(c, score=0.0 if c in left else None) for c in candidates
            ),
            filters=(resources,),
            reason="the only candidate: replicas run as threads of this process",
        )
