"""A discrete-event model of an execution plan, fed by measured service times.

What it models, as the runtime does it: each replica has one bounded input queue
(``queue_capacity`` packets; 0 is unbounded) and takes up to ``max_packets`` packets
per step as one batch (waiting up to ``fill_wait_s`` for ``fill_size`` items when the
head operator batches). A batch needs one of its worker's slots (``slots``: replicas
of a worker process that compute at once) for a service time drawn from the
``ServiceModel`` at that batch size; the batches active on a worker share its slots
equally (processor sharing: the GIL time-slices threads, it does not run one batch
to its end), and with ``host_cores`` all workers together get at most that many. Outputs (``selectivity`` per item) are cut into
packets of ``buffer_size`` and routed: round-robin per packet, key-hash by the
measured per-replica shares, load-aware to the shortest queue. A replica whose
downstream queue is full blocks, holding its outputs, until room frees (blocking
after service). Sources pull ``packet`` items at ``pull_s`` seconds each.

A packet sent to another worker costs its sender ``transport_s`` of CPU (serialising
and sending; calibrated by ``whatif`` from the baseline run). Not modelled: network
latency, the event loop of a Dask worker, operators whose cost depends on state.
"""

from __future__ import annotations

import functools
import heapq
import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_core.diagnosis.model import ChannelModel, JobModel, TaskModel


@dataclass(slots=True)
class _Replica:
    rid: str
    task: TaskModel
    worker: str
    capacity: int
    queue: deque[list[float]] = field(default_factory=deque)
    busy: bool = False
    blocked_on: str | None = None
    out: deque[tuple[str, list[float]]] = field(default_factory=deque)
    pending: list[float] = field(default_factory=list)
    pending_since: float = -1.0
    timer: bool = False
    left: int = 0
    carry: float = 0.0
    # accounting
    busy_s: float = 0.0
    blocked_s: float = 0.0
    blocked_since: float = 0.0
    queue_wait_s: float = 0.0
    items_in: int = 0
    batches: int = 0
    sizes: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Worker:
    """A worker process: its active batches share ``slots`` CPUs equally."""

    slots: int
    active: dict[str, float] = field(default_factory=dict)
    then: dict[str, Callable[[], None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SimResult:
    """What one simulated run gives.

    Attributes:
        throughput: source items per second of makespan.
        p50_ms, p99_ms: emission-to-sink latency of the items.
        makespan_s: from the first pull to the last sink item.
        operators: task name -> utilisation (busy / (replicas * makespan)),
            blocked fraction, mean queue wait per item (ms), service per batch (ms),
            batch sizes seen and items per replica.
    """

    throughput: float
    p50_ms: float
    p99_ms: float
    makespan_s: float
    items: int
    operators: dict[str, dict[str, Any]]
    cross_packets: dict[str, int] = field(default_factory=dict)
    #: latency (ms) at each of ``QUANTILES``
    quantiles_ms: dict[float, float] = field(default_factory=dict)


class Simulator:
    """One run of the model (see the module docstring)."""

    def __init__(
        self, model: JobModel, *, seed: int = 0, host_cores: int | None = None
    ) -> None:
        self.m = model
        self.host_cores = host_cores
        self._since = 0.0
        self._version = 0
        self.rng = random.Random(seed)
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = count()
        names = set(model.worker_of.values()) | set(model.slots)
        self.workers = {w: _Worker(model.slots.get(w, 1)) for w in names}
        self.reps: dict[str, _Replica] = {}
        for t in model.tasks:
            for rid in t.replicas:
                self.reps[rid] = _Replica(
                    rid, t, model.worker_of.get(rid, "?"), t.queue_capacity
                )
        self.routes: dict[str, list[tuple[ChannelModel, list[str]]]] = {}
        for t in model.tasks:
            outs = [(c, self.m.task(c.dst_task).replicas) for c in model.channels]
            self.routes[t.name] = [(c, d) for c, d in outs if c.src_task == t.name]
        self.waiters: dict[str, list[_Replica]] = {rid: [] for rid in self.reps}
        self.rr: dict[tuple[str, str], int] = {}
        self.latencies: list[float] = []
        self.cross: dict[str, int] = {}
        self.last_sink = 0.0

    # -- events -----------------------------------------------------------------

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, next(self._seq), fn))

    def run(self) -> SimResult:
        for r in self.reps.values():
            if r.task.is_source:
                r.left = r.task.items
                self.at(0.0, functools.partial(self._want_slot, r))
        while self._events:
            self.now, _, fn = heapq.heappop(self._events)
            fn()
        return self._result()

    # -- workers (processor sharing) ---------------------------------------------

    def _want_slot(self, r: _Replica) -> None:
        """``r`` has work: pull (sources) or process its pending batch."""
        r.busy = True
        t = r.task
        if t.is_source:
            n = min(t.packet, r.left)
            r.left -= n
            pulled = t.pull.draw(n, self.rng) if t.pull else t.pull_s * n
            took = pulled + (t.service.draw(n, self.rng) if t.service.by_size else 0.0)
            batch = [self.now + pulled] * n  # stamped once pulled (approximately)
        else:
            batch = r.pending
            r.pending = []
            n = len(batch)
            took = t.service.draw(n, self.rng)
            r.sizes[n] = r.sizes.get(n, 0) + 1
        r.batches += 1
        r.busy_s += took
        self._work(r, took, functools.partial(self._done, r, batch))

    def _work(self, r: _Replica, seconds: float, then: Callable[[], None]) -> None:
        """``seconds`` of CPU for ``r`` on its worker, then ``then()``."""
        w = self.workers[r.worker]
        self._advance()
        w.active[r.rid] = seconds
        w.then[r.rid] = then
        self._reschedule()

    def _rates(self) -> dict[str, float]:
        """Per worker: the share of a CPU each of its active batches gets."""
        share = {
            name: min(1.0, w.slots / len(w.active))
            for name, w in self.workers.items()
            if w.active
        }
        if self.host_cores:
            using = sum(min(len(w.active), w.slots) for w in self.workers.values())
            if using > self.host_cores:
                share = {k: v * self.host_cores / using for k, v in share.items()}
        return share

    def _advance(self) -> None:
        elapsed = self.now - self._since
        if elapsed > 0:
            for name, rate in self._rates().items():
                active = self.workers[name].active
                for rid in active:
                    active[rid] -= elapsed * rate
        self._since = self.now

    def _reschedule(self) -> None:
        self._version += 1
        rates = self._rates()
        waits = [
            max(0.0, left) / rate
            for name, rate in rates.items()
            for left in self.workers[name].active.values()
        ]
        if waits:
            when = self.now + min(waits)
            self.at(when, functools.partial(self._tick, self._version))

    def _tick(self, version: int) -> None:
        if version != self._version:
            return
        self._advance()
        finished = []
        for w in self.workers.values():
            for rid in [rid for rid, left in w.active.items() if left <= 1e-12]:
                del w.active[rid]
                finished.append(w.then.pop(rid))
        self._reschedule()
        for then in finished:
            then()

    def _done(self, r: _Replica, batch: list[float]) -> None:
        r.busy = False
        t = r.task
        outs = self._select(r, batch)
        if not self.routes[t.name]:
            for e in outs:
                self.latencies.append(self.now - e)
            self.last_sink = self.now
        else:
            self._route(r, outs)
            cross = sum(1 for d, _ in r.out if self.reps[d].worker != r.worker)
            if cross:
                self.cross[r.worker] = self.cross.get(r.worker, 0) + cross
                if self.m.transport_s:
                    cost = cross * self.m.transport_s
                    self._work(r, cost, functools.partial(self._push_out, r))
                    return
        self._push_out(r)

    def _select(self, r: _Replica, batch: list[float]) -> list[float]:
        s = r.task.selectivity
        if s == 1.0:
            return batch
        want = len(batch) * s + r.carry
        n = int(want)
        r.carry = want - n
        return [batch[i % len(batch)] for i in range(n)] if batch else []

    def _route(self, r: _Replica, items: list[float]) -> None:
        size = self.m.buffer_size
        for ch, dsts in self.routes[r.task.name]:
            parts: dict[str, list[float]] = {}
            if len(dsts) == 1:
                parts[dsts[0]] = items
            elif ch.keyed:
                weights = [ch.shares.get(d, 1.0 / len(dsts)) for d in dsts]
                for e, d in zip(
                    items, self.rng.choices(dsts, weights, k=len(items)), strict=True
                ):
                    parts.setdefault(d, []).append(e)
            for i in range(0, len(items), size):
                chunk = items[i : i + size]
                if len(dsts) == 1 or ch.keyed:
                    break
                if ch.router == "round-robin":
                    k = (r.rid, ch.dst_task)
                    j = self.rr.get(k, 0) % len(dsts)
                    self.rr[k] = j + 1
                    d = dsts[j]
                else:
                    d = min(dsts, key=lambda x: len(self.reps[x].queue))
                parts.setdefault(d, []).extend(chunk)
            for d, part in parts.items():
                for i in range(0, len(part), size):
                    r.out.append((d, part[i : i + size]))

    def _push_out(self, r: _Replica) -> None:
        while r.out:
            d, packet = r.out[0]
            dst = self.reps[d]
            if dst.capacity and len(dst.queue) >= dst.capacity:
                if r.blocked_on is None:
                    r.blocked_since = self.now
                r.blocked_on = d
                self.waiters[d].append(r)
                return
            r.out.popleft()
            dst.queue.append(packet)
            self._try_start(dst)
        if r.blocked_on is not None:
            r.blocked_s += self.now - r.blocked_since
            r.blocked_on = None
        if r.task.is_source:
            if r.left > 0:
                self._want_slot(r)
        else:
            self._try_start(r)

    def _try_start(self, r: _Replica) -> None:
        if r.busy or r.blocked_on is not None or r.out:
            return
        if r.queue:
            got = 0
            while r.queue and got < self.m.max_packets:
                packet = r.queue.popleft()
                got += 1
                r.items_in += len(packet)
                r.queue_wait_s += sum(self.now - e for e in packet)
                if not r.pending:
                    r.pending_since = self.now
                r.pending.extend(packet)
            self._wake_writers(r)
        if not r.pending:
            return
        t = r.task
        due = r.pending_since + t.fill_wait_s
        if t.fill_wait_s and len(r.pending) < t.fill_size and self.now < due:
            if not r.timer:
                r.timer = True
                self.at(due, lambda: self._fill_due(r))
            return
        self._want_slot(r)

    def _fill_due(self, r: _Replica) -> None:
        r.timer = False
        self._try_start(r)

    def _wake_writers(self, r: _Replica) -> None:
        writers, self.waiters[r.rid] = self.waiters[r.rid], []
        for w in writers:
            if w.blocked_on == r.rid:
                self._push_out(w)

    # -- result -----------------------------------------------------------------

    def _result(self) -> SimResult:
        span = self.last_sink or self.now or 1e-9
        ops: dict[str, dict[str, Any]] = {}
        for t in self.m.tasks:
            reps = [self.reps[i] for i in t.replicas]
            items = sum(r.items_in for r in reps)
            batches = sum(r.batches for r in reps)
            ops[t.name] = {
                "replicas": len(reps),
                "utilisation": sum(r.busy_s for r in reps) / (len(reps) * span),
                "blocked": sum(r.blocked_s for r in reps) / (len(reps) * span),
                "queue_wait_ms": 1e3 * sum(r.queue_wait_s for r in reps) / items
                if items
                else 0.0,
                "service_ms": 1e3 * sum(r.busy_s for r in reps) / batches
                if batches
                else 0.0,
                "items": [r.items_in for r in reps],
                "batch_sizes": sorted({k for r in reps for k in r.sizes}),
            }
        lat = sorted(self.latencies)
        qs = {q: 1e3 * percentile(lat, q) for q in QUANTILES}
        return SimResult(
            quantiles_ms=qs,
            throughput=self.m.source_items() / span,
            p50_ms=qs[0.5],
            p99_ms=qs[0.99],
            makespan_s=span,
            items=len(lat),
            operators=ops,
            cross_packets=dict(self.cross),
        )


#: the latency quantiles a result reports (what-if calibrates its latency on them)
QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted ``values`` (0.0 when empty)."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[
        min(998, max(0, round(q * 1000) - 1))
    ]


def simulate(
    model: JobModel, *, seed: int = 0, host_cores: int | None = None
) -> SimResult:
    """Run the model of ``model`` once (deterministic for a seed); ``host_cores``
    caps the CPUs all workers share (workers on one machine), None: no cap."""
    return Simulator(model, seed=seed, host_cores=host_cores).run()
