"""What a submitted job hands back: the handle, the result and the failure error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sage_core.common.errors import SageError


class JobFailed(SageError):
    """A job stopped because one of its replicas failed; ``cause`` is the error
    (an ``OperatorFailure`` naming operator, replica and item for operator errors)."""

    def __init__(self, job_id: str, cause: BaseException) -> None:
        self.job_id = job_id
        self.cause = cause
        super().__init__(f"job {job_id} failed: {cause}")


@dataclass(frozen=True, slots=True)
class JobResult:
    """The outcome of a finished job.

    Attributes:
        status: ``"succeeded"`` or ``"cancelled"``.
        metrics: ``{"operators": {name: totals}, "replicas": {id: counters}}``.
        results: sink operator name -> the ``result()`` of each of its replicas.
        dead_letters: records of items routed to the dead-letter sink.
        states: replica id -> operator name -> final ``get_state()``.
        traces: finished packet traces kept in memory.
    """

    job_id: str
    status: str
    duration_s: float
    metrics: Mapping[str, Any]
    results: Mapping[str, list[Any]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    states: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    traces: list[dict[str, Any]] = field(default_factory=list)

    def collected(self, sink: str | None = None) -> list[Any]:
        """Items gathered by ``collect`` sinks: of ``sink``, or of the only one.

        Raises:
            KeyError: no such sink, or several collecting sinks and none named.
        """
        lists = {
            name: parts
            for name, parts in self.results.items()
            if all(isinstance(p, list) for p in parts)
        }
        if sink is None:
            if len(lists) != 1:
                raise KeyError(
                    f"name the sink: collecting sinks are {sorted(lists) or 'none'}"
                )
            sink = next(iter(lists))
        if sink not in lists:
            raise KeyError(f"no collecting sink named {sink!r}; have {sorted(lists)}")
        return [item for part in lists[sink] for item in part]

    def state_of(self, operator: str) -> list[Any]:
        """The final state of every replica of ``operator`` (replica order)."""
        return [
            states[operator]
            for _, states in sorted(self.states.items())
            if operator in states
        ]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary: status, duration, per-operator metrics."""
        return {
            "job": self.job_id,
            "status": self.status,
            "duration_s": self.duration_s,
            "operators": dict(self.metrics.get("operators", {})),
            "dead_letters": len(self.dead_letters),
        }


class JobHandle:
    """A running job (base class of every runtime's handle)."""

    job_id: str

    def wait(self, timeout: float | None = None) -> JobResult:
        """Block until the job ends; its result.

        Raises:
            JobFailed: a replica failed (the job was stopped).
            TimeoutError: still running after ``timeout`` seconds.
        """
        raise TypeError(f"{type(self).__name__} must implement wait()")

    def cancel(self) -> None:
        """Stop every replica promptly; ``wait()`` then returns a cancelled result."""
        raise TypeError(f"{type(self).__name__} must implement cancel()")

    def status(self) -> str:
        """``"running"``, ``"succeeded"``, ``"failed"`` or ``"cancelled"``."""
        raise TypeError(f"{type(self).__name__} must implement status()")

    def metrics(self) -> dict[str, Any]:
        """Live per-operator and per-replica counters."""
        raise TypeError(f"{type(self).__name__} must implement metrics()")

    def scale(self, operator: str, replicas: int) -> list[str]:
        """Run ``operator`` on ``replicas`` replicas from now on, in place: replicas
        are added or retired one by one while the others keep running (see
        ``compiler.rescale``). Returns the ids of the replicas added or retired.

        Raises:
            RescaleError: the operator cannot change in place, or the job is not
                running.
            PlacementError: no worker fits a new replica.
        """
        raise TypeError(f"{type(self).__name__} must implement scale()")
