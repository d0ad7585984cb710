"""``RuntimeSettings``: how a plan's replicas move items (batching, queues, linger,
tracing, dead letters, checkpoints and restarts), validated when a plan is built or
read (``from_mapping``, ``problems``)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sage_core.common.errors import SageError


class PlanFormatError(SageError, ValueError):
    """A serialised plan is malformed or of an unknown version."""


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """How replicas move items.

    Attributes:
        buffer_size: most items in one packet (a micro-batch on a channel); 1 sends
            every item on its own.
        linger_ms: about how long a source may hold a partial packet to fill it:
            half of it while the downstream is idle, all of it while items are on
            the way downstream (0: every packet is sent with the first item).
        latency_target_ms: the emission-to-sink latency batching aims to stay within
            at moderate load: ``linger_ms`` is capped at a quarter of it, and while
            the downstream has a backlog a source packet may fill for up to half of it.
        queue_capacity: default packets a replica's input queue holds.
        max_packets: most packets a replica takes from its queue per step (a step
            takes as many as its last one processed within ``linger_ms``, or a
            quarter of ``latency_target_ms`` where ``linger_ms`` is 0).
        chaining: fuse consecutive stateless operators of equal parallelism.
        direct_links: cross-worker packets go over direct links between replica
            actors (a listener per receiving replica on its worker's host, a random
            port); False sends them by actor calls through the workers' own ports
            (for networks that only open those, at about twice the CPU per packet).
        trace_every: trace one packet in this many per source replica (0: off).
        trace_path: JSONL file the traces are appended to (None: kept in memory).
        dead_letter_sink: sink plugin that receives dead-letter records as well as
            the job result (None: the job result only).
        dead_letter_config: config of that sink (``{"path": "dead.jsonl"}``).
        checkpoint_interval_s: seconds between aligned checkpoints (None: off).
        checkpoint_dir: where checkpoints go, a path or fsspec URL (None: the data
            directory's ``checkpoints/``); each job writes under its id.
        checkpoints_retained: committed checkpoints kept per job.
        restart: what a failed job does: ``"none"``, ``"fixed(N, DELAY_S)"`` or
            ``"exponential(INITIAL_S, MAX_S, ATTEMPTS)"`` restarts from the last
            committed checkpoint (``sage_core.checkpoint.restart``).
        metrics_interval_s: seconds between the live metrics a Dask job's master
            pulls from its replicas (the ``/sage`` page, ``sage diagnose`` of a
            running job), and between the live counters ``sage run`` writes into a
            running local job's record. A pull holds each worker's event loop for a moment, which
            shows in the tail latency, hence 5 s; lost workers are noticed every
            second regardless.
        replace_wait_s: how long a restart after a lost worker waits for workers
            that satisfy every replica's contract (a GPU operator whose GPU workers
            are gone waits for one to join) before the job fails.
    """

    buffer_size: int = 64
    linger_ms: float = 1.0
    latency_target_ms: float = 5.0
    queue_capacity: int = 64
    max_packets: int = 64
    chaining: bool = True
    direct_links: bool = True
    trace_every: int = 1000
    trace_path: str | None = None
    dead_letter_sink: str | None = None
    dead_letter_config: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_interval_s: float | None = None
    checkpoint_dir: str | None = None
    checkpoints_retained: int = 2
    restart: str = "none"
    replace_wait_s: float = 300.0
    metrics_interval_s: float = 5.0

    def problems(self) -> list[str]:
        out = []
        for name in ("buffer_size", "queue_capacity", "max_packets"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                out.append(f"{name}: must be an integer >= 1, got {v!r}")
        for name in ("linger_ms",):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                out.append(f"{name}: must be a number >= 0, got {v!r}")
        for name in ("latency_target_ms", "metrics_interval_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                out.append(f"{name}: must be a number > 0, got {v!r}")
        for name in ("chaining", "direct_links"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                out.append(f"{name}: must be true or false, got {v!r}")
        v = self.trace_every
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            out.append(f"trace_every: must be an integer >= 0, got {v!r}")
        out += _checkpoint_problems(self)
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RuntimeSettings:
        """Settings from a mapping; unknown names or bad values raise PlanFormatError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PlanFormatError(
                f"unknown setting(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        settings = cls(**dict(data))
        problems = settings.problems()
        if problems:
            raise PlanFormatError("invalid settings: " + "; ".join(problems))
        return settings


def step_budget_s(linger_ms: float, latency_target_ms: float) -> float:
    """The service a replica's step aims within (``max_packets``): the linger,
    capped at a quarter of the latency target, or that quarter where the linger
    is 0."""
    target = latency_target_ms / 1000.0
    return min(linger_ms / 1000.0, target / 4) or target / 4


def offload_cpu_s() -> float:
    """A Dask replica's step that computes longer than this moves its steps from
    the worker's event loop to a thread of its own (four GIL switch intervals:
    ``runtime/dask_actor.py`` says why); the what-if applies the same rule."""
    return 4 * sys.getswitchinterval()


def quota(capacity: int, senders: int) -> int:
    """Credits (queue slots) of each sender of a Dask replica with ``senders``
    upstream replicas and input queue ``capacity`` (``runtime.transport.Inbox``;
    the what-if gives a modelled Dask replica's senders the same)."""
    return max(1, capacity // max(1, senders))


#: a step on the loop that waits (sleeps, reads a socket or a file) longer than
#: this, and longer than it computes, moves the steps to the thread: the loop it
#: blocks carries the other replicas' packets. A step that computes and is
#: preempted now and then by other processes does not count as waiting
OFFLOAD_WAIT_S = 0.0005
#: a single step on the loop this long moves them at once
OFFLOAD_STALL_S = 0.05
#: short steps in a row (run in the replica's thread) before steps move to the loop
PROBE_STEPS = 3


@dataclass(slots=True)
class LoopSteps:
    """Where a Dask replica's steps run: its first ``PROBE_STEPS`` in a thread of
    its own, then on its worker's event loop, until ``offload`` says they move to
    the thread for good. The runtime feeds it every step (``dask_actor``); the
    what-if feeds it the modelled ones, so that a counterfactual with longer steps
    (bigger packets) leaves the loop when and as often as the runtime would."""

    #: probed steps still to see in the thread
    probing: int = PROBE_STEPS
    #: slow steps on the loop in a row
    slow: int = 0

    def offload(self, cpu: float, took: float) -> bool:
        """After a step that computed ``cpu`` seconds in ``took``: whether the
        replica's steps move to its thread now. A probed step moves them if it
        computed past ``offload_cpu_s`` or waited two GIL switch intervals (a
        blocking call: shorter waits in a thread may be another thread's GIL); on
        the loop, one stall of ``OFFLOAD_STALL_S`` does, or three slow steps in a
        row (a loaded machine makes single steps slow now and then)."""
        limit = offload_cpu_s()
        waited = took - cpu
        if self.probing:
            if cpu > limit or waited > 2 * sys.getswitchinterval():
                return True
            self.probing -= 1
            return False
        slow = cpu > limit or (waited > OFFLOAD_WAIT_S and waited > cpu)
        self.slow = self.slow + 1 if slow else 0
        return self.slow >= 3 or took > OFFLOAD_STALL_S


def paced_take(
    popped: int, took: float, *, budget_s: float, least: int, most: int
) -> int | None:
    """Packets a replica's next step may take after one that popped ``popped``
    packets and took ``took`` seconds: as many as fit in ``budget_s`` at that
    pace, between ``least`` and ``most`` (None: nothing popped, keep the last)."""
    if not popped:
        return None
    fit = min(most, popped * budget_s / took) if took > 0 else most
    return max(least, int(fit))


def _checkpoint_problems(s: RuntimeSettings) -> list[str]:
    from sage_core.checkpoint.restart import RestartStrategy, RestartStrategyError

    out = []
    v = s.checkpoint_interval_s
    if v is not None and (
        isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
    ):
        out.append(f"checkpoint_interval_s: must be a number > 0 or None, got {v!r}")
    v = s.replace_wait_s
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        out.append(f"replace_wait_s: must be a number >= 0, got {v!r}")
    v = s.checkpoints_retained
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        out.append(f"checkpoints_retained: must be an integer >= 1, got {v!r}")
    try:
        RestartStrategy.parse(s.restart)
    except RestartStrategyError as exc:
        out.append(str(exc))
    return out
