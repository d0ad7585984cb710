"""Replica autoscaling of a served pipeline on queue depth and the hub's backlog.

Every ``interval_s`` the server hands the running job's replica metrics and its
request hub's load (:class:`Demand`: requests arrived so far, admitted or refused,
and requests waiting for a source to take them) to an :class:`Autoscaler`. For each operator under autoscaling
it averages the input-queue depth of the operator's replicas (packets waiting; a
served pipeline sends one request per packet), their busy share (service seconds per
second) and their service seconds per item. A step in progress counts as far as it
has gone (``in_step_s``, ``in_step_items`` of the replica metrics): a replica that
takes many requests into one long step would otherwise look idle until the step ends.

An operator grows when, for ``up_after`` samples in a row, its queues stay above
``target_depth``, or the hub's backlog stays non-empty and does not shrink while the
operator's replicas are busy at least ``max_busy`` of the time (requests wait at the
door because this operator holds them back; its queues may look shallow when they
are small or refill one request at a time). It grows to the replicas the demand
needs: the hub's arrival rate plus the backlog (waiting at the hub and in the
operator's queues) cleared within ``drain_s``, times the operator's seconds per
item, over ``max_busy`` (so load at four times one replica's capacity goes from 1 to
4 replicas in one step, not 1 -> 2 -> 4), and by at least one replica; where no
service time is known yet it doubles. With queues under a quarter of the target for
``down_after`` samples it shrinks to half or to what the demand needs, whichever is
more, but only if the remaining replicas would still be busy less than ``max_busy``
of the time: empty queues alone also describe replicas that keep up only because
there are enough of them. Every change is a :class:`ScaleDecision`, kept and logged,
with the samples that led to it.

The server applies a decision in place (see
:class:`~sage_core.serve.server.PipelineServer` and ``compiler.rescale``): replicas
of the operator are added beside the running ones or retired after draining what
they hold, and every other operator's replicas, engines included, keep running.
Served operators are maps, filters and flat_maps without keyed inputs, so no state
moves. An operator that cannot change in place (chained, or a job with
checkpoints) is *rolled*: a plan with the new parallelism takes over the request
hub and the old job finishes the requests it holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
class Demand:
    """The request hub's load at one sample."""

    arrived: int
    waiting: int


@dataclass(frozen=True)
class ScaleDecision:
    """One change of an operator's replicas and why."""

    at: float
    operator: str
    before: int
    after: int
    reason: str
    depths: tuple[float, ...]
    demand_per_s: float | None = None
    service_s_per_item: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "operator": self.operator,
            "from": self.before,
            "to": self.after,
            "reason": self.reason,
            "mean_depths": list(self.depths),
            "demand_per_s": self.demand_per_s,
            "service_s_per_item": self.service_s_per_item,
        }


@dataclass
class _OpSample:
    """One operator's replicas at one sample."""

    depths: list[int] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    service_s: float = 0.0  # service seconds since the last sample (replicas seen)
    items: int = 0  # items taken since the last sample (same replicas)

    def per_item(self) -> float | None:
        return self.service_s / self.items if self.items > 0 else None


class _OpView(NamedTuple):
    """What a decision about one operator reads."""

    now: int  # its replicas now
    rng: ScaleRange
    seen: list[float]  # mean queue depths, latest last
    used: list[float]  # busy shares, latest last
    needed: int | None  # replicas the demand needs (None: unknown)


@dataclass
class Autoscaler:
    """Decides replica counts from queue depths, the hub's backlog and the demand
    (see the module docstring).

    Args:
        ranges: the operators under autoscaling and their ranges.
        target_depth: packets waiting per replica above which an operator grows.
        up_after: samples in a row of a growth signal before it grows.
        down_after: samples in a row under a quarter of the target depth before it
            shrinks.
        max_busy: the busy share replicas are sized for: it grows to keep them under
            it, shrinks only if they stay under it, and a backlog at the hub grows
            only operators at least this busy.
        drain_s: seconds within which a grown operator is to clear the backlog.
    """

    ranges: Mapping[str, ScaleRange]
    target_depth: float = 2.0
    up_after: int = 3
    down_after: int = 10
    max_busy: float = 0.6
    drain_s: float = 10.0
    decisions: list[ScaleDecision] = field(default_factory=list)
    _seen: dict[str, list[float]] = field(default_factory=dict)
    _busy: dict[str, list[float]] = field(default_factory=dict)
    _last: dict[str, tuple[float, int, float]] = field(default_factory=dict)
    _backlog: list[int] = field(default_factory=list)
    _arrived: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        if not self.target_depth > 0 or self.up_after < 1 or self.down_after < 1:
            raise AutoscaleError(
                "target_depth must be > 0 and up_after/down_after >= 1"
            )
        if not self.drain_s > 0:
            raise AutoscaleError(f"drain_s must be > 0, got {self.drain_s}")
        if not 0 < self.max_busy <= 1:
            raise AutoscaleError(f"max_busy must be in (0, 1], got {self.max_busy}")

    def _sample(
        self, replicas: Mapping[str, Mapping[str, Any]], now: float
    ) -> dict[str, _OpSample]:
        """Per operator under autoscaling: its replicas' queue depths, busy
        fractions and service seconds and items since the last sample (a replica
        seen for the first time, e.g. after a roll, has none yet)."""
        out: dict[str, _OpSample] = {}
        last, self._last = self._last, {}
        for rid, snap in replicas.items():
            op, queue = snap.get("task"), snap.get("queue")
            if op not in self.ranges or queue is None:
                continue
            if snap.get("state") in ("finished", "failed", "cancelled"):
                continue  # a retired replica (or one of a rolled job) that ended
            sample = out.setdefault(str(op), _OpSample())
            sample.depths.append(int(queue["depth"]))
            # a step in progress counts as far as it has gone (a long batch would
            # otherwise look idle until it ends, then busy all at once)
            service = float(snap.get("service_s", 0.0)) + float(
                snap.get("in_step_s", 0.0)
            )
            items = int(snap.get("items_in", 0)) + int(snap.get("in_step_items", 0))
            self._last[rid] = (service, items, now)
            before = last.get(rid)
            if before is None or service < before[0] or not now > before[2]:
                continue  # new, or a replica of a rolled job under the same id
            sample.busy.append(min(1.0, (service - before[0]) / (now - before[2])))
            if items > before[1]:
                sample.service_s += service - before[0]
                sample.items += items - before[1]
        return out

    def _read_demand(self, demand: Demand | None, now: float) -> float | None:
        """Record the hub's backlog; requests arrived per second since the last
        sample (None: not known yet)."""
        if demand is None:
            return None
        last, self._arrived = self._arrived, (demand.arrived, now)
        self._backlog.append(demand.waiting)
        del self._backlog[: -self.up_after]
        if last is None or not now > last[1] or demand.arrived < last[0]:
            return None
        return (demand.arrived - last[0]) / (now - last[1])

    def _needed(
        self, rate: float | None, backlog: int, per_item: float | None
    ) -> int | None:
        """Replicas that serve ``rate`` items/s and clear ``backlog`` items within
        ``drain_s``, at ``per_item`` seconds each, busy at most ``max_busy`` of the
        time (None: the service time is unknown)."""
        if per_item is None:
            return None
        work = ((rate or 0.0) + backlog / self.drain_s) * per_item
        return max(1, math.ceil(work / self.max_busy - 1e-9))

    def _backlogged(self) -> bool:
        """The hub's backlog stayed non-empty and did not shrink over the last
        ``up_after`` samples."""
        b = self._backlog
        return len(b) == self.up_after and min(b) > 0 and b[-1] >= b[0]

    def observe(
        self,
        parallelism: Mapping[str, int],
        replicas: Mapping[str, Mapping[str, Any]],
        demand: Demand | None = None,
    ) -> dict[str, int]:
        """New replica counts due now (empty: no change), given the operators'
        current ``parallelism``, the job's replica metrics and the hub's load."""
        now_s = time.monotonic()
        sampled = self._sample(replicas, now_s)
        rate = self._read_demand(demand, now_s)
        changes: dict[str, int] = {}
        for op, rng in self.ranges.items():
            if op not in sampled:
                continue
            sample = sampled[op]
            mean = sum(sample.depths) / len(sample.depths)
            seen = self._seen.setdefault(op, [])
            seen.append(mean)
            del seen[: -max(self.up_after, self.down_after)]
            used = self._busy.setdefault(op, [])
            if sample.busy:
                used.append(sum(sample.busy) / len(sample.busy))
            del used[: -self.down_after]
            now = parallelism[op]
            per_item = sample.per_item()
            waiting = self._backlog[-1] if self._backlog else 0
            needed = self._needed(rate, waiting + sum(sample.depths), per_item)
            view = _OpView(now, rng, seen, used, needed)
            after, reason = self._grow(view)
            if after == now:
                after, reason = self._shrink(view)
            if after != now:
                changes[op] = after
                self.decisions.append(
                    ScaleDecision(
                        time.time(),
                        op,
                        now,
                        after,
                        reason,
                        tuple(seen),
                        demand_per_s=rate,
                        service_s_per_item=per_item,
                    )
                )
                seen.clear()  # the new replicas start a fresh record
                used.clear()
                self._backlog.clear()
        return changes

    def _grow(self, op: _OpView) -> tuple[int, str]:
        now, rng, seen, used, needed = op
        recent = seen[-self.up_after :]
        if len(recent) == self.up_after and min(recent) > self.target_depth:
            why = (
                f"mean queue depth above {self.target_depth:g} packets per replica "
                f"for {self.up_after} samples"
            )
        elif self._backlogged() and used and used[-1] >= self.max_busy:
            why = (
                f"{self._backlog[-1]} requests waiting at the hub for "
                f"{self.up_after} samples with replicas {used[-1]:.0%} busy"
            )
        else:
            return now, ""
        if needed is None:
            return rng.clamp(now * 2), why
        return rng.clamp(max(needed, now + 1)), (
            f"{why}; the demand needs {needed} at most {self.max_busy:.0%} busy"
        )

    def _shrink(self, op: _OpView) -> tuple[int, str]:
        now, rng, seen, used, needed = op
        recent = seen[-self.down_after :]
        half = rng.clamp(max(now // 2, needed or 0))
        if half >= now:
            return now, ""
        # the busy share the remaining replicas would have
        busy_after = max(used) * now / half if used else 1.0
        if (
            len(recent) == self.down_after
            and len(used) == self.down_after
            and max(recent) < self.target_depth / 4
            and busy_after < self.max_busy
        ):
            return half, (
                f"mean queue depth under {self.target_depth / 4:g} packets per "
                f"replica and at most {max(used):.0%} busy for {self.down_after} "
                f"samples ({busy_after:.0%} busy with {half})"
            )
        return now, ""
