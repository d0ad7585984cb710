"""Placement policies: which worker hosts each replica (pure classes).

All five place one replica at a time through the shared ``Ledger`` (so earlier
decisions and replicas of running jobs count) and record a full decision trace:
every candidate worker with its free resources and resident replicas, the filters
that removed workers and why, the score of each survivor and the reason of the
choice. Every policy first applies the hard ``resources`` filter (GPU, memory, named
resources); "free CPU" is soft: when no worker has a free thread, the policy says so
in the trace and oversubscribes.

* ``fifo``: the first worker (cluster order) with a free thread.
* ``round-robin``: workers in turn, skipping those that do not fit.
* ``load-aware-spread``: the least loaded worker (CPU in use per thread, then
  resident replicas): balances load, keeps queues short.
* ``load-aware-pack``: the most loaded worker that still has room (``fill`` x its
  threads): fills a worker before using the next.
* ``priority``: jobs with a higher priority are placed first and take the best
  (least loaded) workers, avoiding workers that host lower-priority work; jobs with
  a lower priority get the workers that higher-priority jobs do not use, and share
  only when nothing else fits.

Config shared by all: ``priority`` (the job's priority, default 0).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from sage_core.compiler.placement import (
    CandidateTrace,
    FilterTrace,
    Ledger,
    PlacementDecision,
    PlacementPolicy,
    ReplicaDemand,
)


def _load(c: CandidateTrace, ledger: Ledger) -> float:
    """CPU in use per thread of the candidate's worker (0 = idle)."""
    threads = max(1.0, float(ledger.workers[c.worker].threads))
    return c.cpu_in_use / threads


class _Policy(PlacementPolicy):
    """Shared steps: candidates, hard resource filter, soft CPU filter, trace."""

    #: whether a worker without a free thread is filtered (softly) before scoring
    wants_free_cpu: ClassVar[bool] = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.priority = int(config.get("priority", 0))

    def place_one(
        self, demand: ReplicaDemand, ledger: Ledger
    ) -> PlacementDecision | None:
        candidates = ledger.candidates()
        resources = ledger.resource_filter(demand)
        filters = [resources]
        left = [c for c in candidates if c.worker not in resources.removed]
        if not left:
            return None
        extra = self.filter(demand, ledger, left)
        for f in extra:
            filters.append(f)
            left = [c for c in left if c.worker not in f.removed] or left
        if self.wants_free_cpu:
            need = max(demand.contract.cpu, 1e-9)
            busy = {
                c.worker: f"no free thread (cpu {c.free.get('cpu', 0.0):g} free, "
                f"needs {demand.contract.cpu:g})"
                for c in left
                if c.free.get("cpu", 0.0) + 1e-9 < need
            }
            if len(busy) < len(left):
                filters.append(FilterTrace("free-cpu", busy))
                left = [c for c in left if c.worker not in busy]
            else:
                filters.append(FilterTrace("free-cpu (none free: oversubscribing)", {}))
        scores = {c.worker: self.score(demand, ledger, c) for c in left}
        chosen = max(left, key=lambda c: scores[c.worker])
        traced = tuple(replace(c, score=scores.get(c.worker)) for c in candidates)
        return PlacementDecision(
            replica=demand.replica,
            worker=chosen.worker,
            policy=self.name,
            candidates=traced,
            filters=tuple(filters),
            reason=self.reason(chosen, scores[chosen.worker], ledger),
        )

    def filter(
        self, demand: ReplicaDemand, ledger: Ledger, left: list[CandidateTrace]
    ) -> list[FilterTrace]:
        """Policy-specific soft filters (a filter that would remove all is ignored)."""
        return []

    def score(self, demand: ReplicaDemand, ledger: Ledger, c: CandidateTrace) -> float:
        raise TypeError(f"{type(self).__name__} must implement score()")

    def reason(self, chosen: CandidateTrace, score: float, ledger: Ledger) -> str:
        return f"highest score {score:.3f}"


class FifoPlacement(_Policy):
    """First worker, in cluster order, with a free thread (first-available)."""

    name = "fifo"

    def score(self, demand: ReplicaDemand, ledger: Ledger, c: CandidateTrace) -> float:
        return -float(list(ledger.workers).index(c.worker))

    def reason(self, chosen: CandidateTrace, score: float, ledger: Ledger) -> str:
        return f"first fitting worker in cluster order (position {int(-score)})"


class RoundRobinPlacement(_Policy):
    """Workers in turn; a worker that does not fit is skipped."""

    name = "round-robin"
    wants_free_cpu = False

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._next = 0

    def score(self, demand: ReplicaDemand, ledger: Ledger, c: CandidateTrace) -> float:
        names = list(ledger.workers)
        return -float((names.index(c.worker) - self._next) % len(names))

    def place_one(
        self, demand: ReplicaDemand, ledger: Ledger
    ) -> PlacementDecision | None:
        decision = super().place_one(demand, ledger)
        if decision is not None:
            names = list(ledger.workers)
            self._next = (names.index(decision.worker) + 1) % len(names)
        return decision

    def reason(self, chosen: CandidateTrace, score: float, ledger: Ledger) -> str:
        return f"next in turn ({int(-score)} skipped)"


class SpreadPlacement(_Policy):
    """The least loaded worker: CPU in use per thread, then fewest replicas."""

    name = "load-aware-spread"
    wants_free_cpu = False

    def score(self, demand: ReplicaDemand, ledger: Ledger, c: CandidateTrace) -> float:
        return -(_load(c, ledger) + 0.001 * c.replicas)

    def reason(self, chosen: CandidateTrace, score: float, ledger: Ledger) -> str:
        return f"least loaded: {_load(chosen, ledger):.2f} cpu per thread in use"


class PackPlacement(_Policy):
    """The most loaded worker that still has room (``fill`` x threads, default 2)."""

    name = "load-aware-pack"
    wants_free_cpu = False

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.fill = float(config.get("fill", 2.0))

    def filter(
        self, demand: ReplicaDemand, ledger: Ledger, left: list[CandidateTrace]
    ) -> list[FilterTrace]:
        removed = {}
        for c in left:
            threads = float(ledger.workers[c.worker].threads)
            in_use = c.cpu_in_use
            if in_use + demand.contract.cpu > self.fill * threads + 1e-9:
                removed[c.worker] = (
                    f"full: {in_use:g} + {demand.contract.cpu:g} cpu > "
                    f"{self.fill:g} x {threads:g} threads"
                )
        if len(removed) == len(left):
            return [FilterTrace("room (all full: least loaded)", {})]
        return [FilterTrace("room", removed)]

    def score(self, demand: ReplicaDemand, ledger: Ledger, c: CandidateTrace) -> float:
        names = list(ledger.workers)
        # fullest first; among equals the earliest worker (fill in order)
        return _load(c, ledger) - 0.001 * names.index(c.worker) / len(names)

    def reason(self, chosen: CandidateTrace, score: float, ledger: Ledger) -> str:
        return f"fullest worker with room: {_load(chosen, ledger):.2f} cpu per thread"


class PriorityPlacement(_Policy):
    """Higher-priority jobs take the best workers; lower ones get the rest."""

    name = "priority"
    wants_free_cpu = False

    def _priority(self, demand: ReplicaDemand) -> int:
        return max(demand.priority, self.priority)

    def filter(
        self, demand: ReplicaDemand, ledger: Ledger, left: list[CandidateTrace]
    ) -> list[FilterTrace]:
        mine = self._priority(demand)
        removed = {}
        for c in left:
            view = ledger.workers[c.worker]  # other jobs' replicas, before this plan
            other = view.load.get("priority", 0.0)
            if view.replicas and other > mine:
                removed[c.worker] = f"hosts a job of higher priority {other:g} > {mine}"
            elif view.replicas and other < mine and _load(c, ledger) >= 1:
                removed[c.worker] = (
                    f"busy with lower-priority work (priority {other:g} < {mine})"
                )
        return [FilterTrace("priority", removed)]

    def score(self, demand: ReplicaDemand, ledger: Ledger, c: CandidateTrace) -> float:
        return -(_load(c, ledger) + 0.001 * c.replicas)

    def reason(self, chosen: CandidateTrace, score: float, ledger: Ledger) -> str:
        return (
            f"priority {self.priority}: best remaining worker, "
            f"{_load(chosen, ledger):.2f} cpu per thread in use"
        )


POLICIES: tuple[type[PlacementPolicy], ...] = (
    FifoPlacement,
    RoundRobinPlacement,
    SpreadPlacement,
    PackPlacement,
    PriorityPlacement,
)
