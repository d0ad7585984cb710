"""Replica autoscaling of a served pipeline on queue depth.

Every ``interval_s`` the server hands the running job's replica metrics to an
:class:`Autoscaler`. For each operator under autoscaling it averages the input-queue
depth of the operator's replicas (packets waiting; a served pipeline sends one
request per packet) and their busy share (service seconds per second). Above
``target_depth`` for ``up_after`` samples in a row the operator doubles its replicas
(up to its maximum); with queues under a quarter of it for ``down_after`` samples it
halves them (down to its minimum), but only if half the replicas would still be busy
less than ``max_busy`` of the time: empty queues alone also describe replicas that
keep up only because there are enough of them. Every change is a
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
        max_busy: it shrinks only if its replicas, halved, would be busy less than
            this share of the time (by the busiest of those samples).
    """

    ranges: Mapping[str, ScaleRange]
    target_depth: float = 2.0
    up_after: int = 3
    down_after: int = 10
    max_busy: float = 0.6
    decisions: list[ScaleDecision] = field(default_factory=list)
    _seen: dict[str, list[float]] = field(default_factory=dict)
    _busy: dict[str, list[float]] = field(default_factory=dict)
    _last: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.target_depth > 0 or self.up_after < 1 or self.down_after < 1:
            raise AutoscaleError(
                "target_depth must be > 0 and up_after/down_after >= 1"
            )
        if not 0 < self.max_busy <= 1:
            raise AutoscaleError(f"max_busy must be in (0, 1], got {self.max_busy}")

    def _sample(
        self, replicas: Mapping[str, Mapping[str, Any]], now: float
    ) -> dict[str, tuple[list[int], list[float]]]:
        """Per operator under autoscaling: its replicas' queue depths and busy
        fractions since the last sample (service seconds over elapsed seconds; a
        replica seen for the first time, e.g. after a roll, has none yet)."""
        out: dict[str, tuple[list[int], list[float]]] = {}
        last, self._last = self._last, {}
        for rid, snap in replicas.items():
            op, queue = snap.get("task"), snap.get("queue")
            if op not in self.ranges or queue is None:
                continue
            depths, busy = out.setdefault(str(op), ([], []))
            depths.append(int(queue["depth"]))
            service = float(snap.get("service_s", 0.0))
            self._last[rid] = (service, now)
            before = last.get(rid)
            if before is not None and service >= before[0] and now > before[1]:
                busy.append(min(1.0, (service - before[0]) / (now - before[1])))
        return out

    def observe(
        self, parallelism: Mapping[str, int], replicas: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, int]:
        """New replica counts due now (empty: no change), given the operators'
        current ``parallelism`` and the job's replica metrics."""
        sampled = self._sample(replicas, time.monotonic())
        changes: dict[str, int] = {}
        for op, rng in self.ranges.items():
            if op not in sampled:
                continue
            depths, busy = sampled[op]
            mean = sum(depths) / len(depths)
            seen = self._seen.setdefault(op, [])
            seen.append(mean)
            del seen[: -max(self.up_after, self.down_after)]
            used = self._busy.setdefault(op, [])
            if busy:
                used.append(sum(busy) / len(busy))
            del used[: -self.down_after]
            now = parallelism[op]
            after, reason = now, ""
            recent_up = seen[-self.up_after :]
            recent_down = seen[-self.down_after :]
            half = rng.clamp(now // 2)
            # the busy share the remaining replicas would have after halving
            busy_after = max(used) * now / half if used and half else 1.0
            if len(recent_up) == self.up_after and min(recent_up) > self.target_depth:
                after = rng.clamp(now * 2)
                reason = (
                    f"mean queue depth above {self.target_depth:g} packets per "
                    f"replica for {self.up_after} samples"
                )
            elif (
                len(recent_down) == self.down_after
                and len(used) == self.down_after
                and max(recent_down) < self.target_depth / 4
                and busy_after < self.max_busy
            ):
                after = half
                reason = (
                    f"mean queue depth under {self.target_depth / 4:g} packets per "
                    f"replica and at most {max(used):.0%} busy for {self.down_after} "
                    f"samples ({busy_after:.0%} busy with {half})"
                )
            if after != now:
                changes[op] = after
                self.decisions.append(
                    ScaleDecision(time.time(), op, now, after, reason, tuple(seen))
                )
                seen.clear()  # the new replicas start a fresh record
                used.clear()
        return changes
