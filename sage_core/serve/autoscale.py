"""Replica autoscaling of a served pipeline on queue depth.

Every ``interval_s`` the server hands the running job's replica metrics to an
:class:`Autoscaler`. For each operator under autoscaling it averages the input-queue
depth of the operator's replicas (packets waiting; a served pipeline sends one
request per packet). Above ``target_depth`` for ``up_after`` samples in a row the
operator doubles its replicas (up to its maximum); under a quarter of it for
``down_after`` samples it halves them (down to its minimum). Every change is a
:class:`ScaleDecision`, kept and logged, with the samples that led to it.

The server applies a decision by *rolling* the job (see
:class:`~sage_core.serve.server.PipelineServer`): a plan with the new parallelism
takes over the request hub and the old job finishes the requests it holds. Served
operators are maps, filters and flat_maps without keyed inputs, so no state moves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sage_core.common.errors import SageError


class AutoscaleError(SageError, ValueError):
    """An autoscaling range is malformed or names an operator that cannot scale."""


@dataclass(frozen=True)
class ScaleRange:
    """The replicas an operator may have."""

    min: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.max:
            raise AutoscaleError(
                f"an autoscaling range needs 1 <= MIN <= MAX, got {self.min}:{self.max}"
            )

    def clamp(self, n: int) -> int:
        return max(self.min, min(self.max, n))


def parse_range(text: str) -> tuple[str, ScaleRange]:
    """``"OP=MIN:MAX"`` (the ``sage serve --autoscale`` form) as (operator, range)."""
    op, eq, bounds = text.partition("=")
    lo, colon, hi = bounds.partition(":")
    if not (
        eq and colon and op.strip() and lo.strip().isdigit() and hi.strip().isdigit()
    ):
        raise AutoscaleError(f"autoscale {text!r}: expected OP=MIN:MAX, e.g. embed=1:4")
    return op.strip(), ScaleRange(int(lo), int(hi))


@dataclass(frozen=True)
class ScaleDecision:
    """One change of an operator's replicas and why."""

    at: float
    operator: str
    before: int
    after: int
    reason: str
    depths: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "operator": self.operator,
            "from": self.before,
            "to": self.after,
            "reason": self.reason,
            "mean_depths": list(self.depths),
        }


@dataclass
class Autoscaler:
    """Decides replica counts from queue depths (see the module docstring).

    Args:
        ranges: the operators under autoscaling and their ranges.
        target_depth: packets waiting per replica above which an operator grows.
        up_after: samples in a row above the target before it grows.
        down_after: samples in a row under a quarter of it before it shrinks.
    """

    ranges: Mapping[str, ScaleRange]
    target_depth: float = 2.0
    up_after: int = 3
    down_after: int = 10
    decisions: list[ScaleDecision] = field(default_factory=list)
    _seen: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.target_depth > 0 or self.up_after < 1 or self.down_after < 1:
            raise AutoscaleError(
                "target_depth must be > 0 and up_after/down_after >= 1"
            )

    def observe(
        self, parallelism: Mapping[str, int], replicas: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, int]:
        """New replica counts due now (empty: no change), given the operators'
        current ``parallelism`` and the job's replica metrics."""
        depths: dict[str, list[int]] = {}
        for snap in replicas.values():
            queue = snap.get("queue")
            if queue is not None and snap.get("task") in self.ranges:
                depths.setdefault(snap["task"], []).append(int(queue["depth"]))
        changes: dict[str, int] = {}
        for op, rng in self.ranges.items():
            if not depths.get(op):
                continue
            mean = sum(depths[op]) / len(depths[op])
            seen = self._seen.setdefault(op, [])
            seen.append(mean)
            del seen[: -max(self.up_after, self.down_after)]
            now = parallelism[op]
            after, reason = now, ""
            recent_up = seen[-self.up_after :]
            recent_down = seen[-self.down_after :]
            if len(recent_up) == self.up_after and min(recent_up) > self.target_depth:
                after = rng.clamp(now * 2)
                reason = (
                    f"mean queue depth above {self.target_depth:g} packets per "
                    f"replica for {self.up_after} samples"
                )
            elif len(recent_down) == self.down_after and max(recent_down) < (
                self.target_depth / 4
            ):
                after = rng.clamp(now // 2)
                reason = (
                    f"mean queue depth under {self.target_depth / 4:g} packets per "
                    f"replica for {self.down_after} samples"
                )
            if after != now:
                changes[op] = after
                self.decisions.append(
                    ScaleDecision(time.time(), op, now, after, reason, tuple(seen))
                )
                seen.clear()  # the new replicas start a fresh record
        return changes
