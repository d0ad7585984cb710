"""A discrete-event model of an execution plan, fed by measured service times.

What it models, as the runtime does it: each replica has one bounded input queue
(``queue_capacity`` packets; 0 is unbounded) and takes up to ``take`` packets per
step as one batch, waiting up to ``fill_wait_s`` for ``fill_size`` items when the
head operator batches. ``take`` is paced by the runtime's own rule
(``paced_take``): as many packets as the last step processed within the plan's
step budget, between the head's batch and ``max_packets``. A batch needs one of its
worker's slots (``slots``: replicas of a worker process that compute at once) for
a service time drawn from the ``ServiceModel`` at that batch size. A worker of one
slot runs its batches in turns as the GIL does (``servers.Server``, ``switch_s``);
one of more slots shares them equally; with ``host_cores`` all workers together
get at most that many CPUs. Outputs (``selectivity`` per item) are cut into
packets of ``buffer_size`` and routed: round-robin per packet, key-hash by the
measured per-replica shares, load-aware to the shortest queue. A replica whose
downstream queue is full blocks, holding its outputs, until room frees (blocking
after service); on Dask each upstream replica has a share of that queue of its own
(``quota``: the capacity over the senders, as the runtime's credits are), on the
local runtime they share it. Sources pull ``packet`` items at ``pull_s`` seconds
each.

A task whose operator calls an external ``engine`` (``Contract.engine``) does not use
its worker's CPU: its replicas' batches run on that engine, which batches them
together as a continuous-batching server does. Batches of k_1..k_n items active at
once progress at f(k_i) / f(k_1 + ... + k_n) each, f being the task's measured
service time per batch size: with a fixed cost per call (f(k) = a + b k, a > 0) two
concurrent batches finish sooner than one after the other; proportional costs
(a = 0) share the engine like a CPU.

A packet sent to another worker costs CPU at both ends, charged to the worker of
the replica at that end: on the sender's with the send, on the receiver's with the
step that takes the packet in. Each task's cost per end (``JobModel.end_s``) is
what its worker's event loop spent beyond its steps in the baseline run over the
packets that crossed workers there (``whatif.calibrate_transport``): a worker that
only computes paid half of what the worker of the source and the sink did (0.15
against 0.3 ms a packet in the benchmark), which a job-wide average spread evenly.
Without it, ``transport_s`` is split between the ends (``SEND_SHARE``).

A Dask worker whose replicas all run their steps on its event loop (the runtime
moves only long or waiting steps to a thread: ``TaskModel.loop``, and the model
moves them by the runtime's rule, ``LoopSteps``, fed the modelled steps) runs them one at
a time, each to its end, in the order they became ready, a replica going behind
the others after each step (its loop awaits ``asyncio.sleep(0)``); there is no
switch interval. Under that strict alternation a queue keeps the level it had when
the alternation began, and the traces show the queue of a replica that shares a
loop with its source full from the start (7-8 of 8 packets of wait, in every run
of both benchmark sets): the source runs alone until it first blocks. The model
starts such replicas then. A sender on another worker gets its credit back
through the receiver's loop, in the reply to a later push or to its wait for
credit, so not before the step that took the packets ends: those packets hold
their room until then (the traces' transit plus queue wait on such an edge come to
6-7 packets of an 8-packet window). Not modelled: network latency, the rounds of a
loop a packet from another worker waits before it is read (the traces'
``transit_s``: it moves time between transit and queue, not the total), pauses of
the processes (the runs' p99 is 1.3-1.6x their median on Dask, the model's
1.05x), operators whose cost depends on state.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any

from sage_core.compiler.settings import LoopSteps, paced_take, quota
from sage_core.diagnosis.results import QUANTILES, SimResult, percentile
from sage_core.diagnosis.servers import Server

#: the share of a cross-worker packet's CPU its sender pays; its receiver pays the
#: rest, with the step that takes it in
SEND_SHARE = 0.5

__all__ = ["QUANTILES", "SimResult", "Simulator", "percentile", "simulate"]

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_core.diagnosis.model import (
        ChannelModel,
        JobModel,
        TaskModel,
    )


@dataclass(slots=True)
class _Replica:
    rid: str
    task: TaskModel
    worker: str
    capacity: int
    run_on: str = ""
    #: packets (the emission times of their items) with when each was enqueued
    #: and the replica that sent it
    queue: deque[tuple[float, list[float], str]] = field(default_factory=deque)
    #: Dask: credits of each sender (``quota``; 0: its senders share ``capacity``)
    #: and the packets each sent that still hold one
    quota: int = 0
    owed: dict[str, int] = field(default_factory=dict)
    busy: bool = False
    blocked_on: str | None = None
    out: deque[tuple[str, list[float]]] = field(default_factory=deque)
    pending: list[float] = field(default_factory=list)
    pending_since: float = -1.0
    timer: bool = False
    left: int = 0
    carry: float = 0.0
    #: packets the next step may take, and what the running step popped and when
    take: int = 1
    popped: int = 0
    step_start: float = 0.0
    #: CPU its worker owes for packets received from other workers
    received_s: float = 0.0
    #: the senders of the packets its running step took that still hold their
    #: credit: on an event loop it goes back once the step ends (``Simulator`` doc)
    held_from: list[str] = field(default_factory=list)
    #: where its steps run on a Dask worker: the runtime's rule, fed the modelled
    #: steps' service (``LoopSteps``); ``cpu`` is the running step's
    steps: LoopSteps = field(default_factory=LoopSteps)
    cpu: float = 0.0
    #: this replica's own random stream (common random numbers: see ``Simulator``)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    # accounting
    busy_s: float = 0.0
    blocked_s: float = 0.0
    blocked_since: float = 0.0
    queue_wait_s: float = 0.0
    items_in: int = 0
    batches: int = 0
    sizes: dict[int, int] = field(default_factory=dict)


class Simulator:
    """One run of the model (see the module docstring).

    Every replica draws its service times, pulls and key routing from a random
    stream of its own, seeded by ``seed`` and its id (common random numbers): a
    replica that is in two plans draws the same sequence in both, so a prediction
    compares the plans, not two samples of a heavy-tailed service distribution.
    """

    def __init__(
        self, model: JobModel, *, seed: int = 0, host_cores: int | None = None
    ) -> None:
        self.m = model
        self.host_cores = host_cores
        self._since = 0.0
        self._version = 0
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = count()
        names = set(model.worker_of.values()) | set(model.slots)
        loops = _loop_workers(model)
        self.workers = {
            w: Server(
                model.slots.get(w, 1),
                switch_s=model.switch_s,
                rng=random.Random(f"{seed}:gil:{w}"),
                loop=w in loops,
            )
            for w in names
        }
        self.reps: dict[str, _Replica] = {}
        for t in model.tasks:
            for rid in t.replicas:
                home = model.worker_of.get(rid, "?")
                on = f"engine:{t.engine}" if t.engine else home
                self.reps[rid] = _Replica(
                    rid,
                    t,
                    home,
                    t.queue_capacity,
                    on,
                    take=self._least(t),
                    rng=random.Random(f"{seed}:{rid}"),
                )
                if t.engine:
                    self.workers.setdefault(on, Server(1, engine=True))
        if model.runtime == "dask":  # each sender has its own credits
            for t in model.tasks:
                senders = sum(
                    len(model.task(u).replicas) for u in model.upstream(t.name)
                )
                for rid in t.replicas:
                    r = self.reps[rid]
                    r.quota = quota(r.capacity, senders) if r.capacity else 0
        self.routes: dict[str, list[tuple[ChannelModel, list[str]]]] = {}
        for t in model.tasks:
            outs = [(c, self.m.task(c.dst_task).replicas) for c in model.channels]
            self.routes[t.name] = [(c, d) for c, d in outs if c.src_task == t.name]
        self.waiters: dict[str, list[_Replica]] = {rid: [] for rid in self.reps}
        #: replicas that share an event loop with a source: they start once it
        #: first blocks (module docstring)
        sourced = {r.worker for r in self.reps.values() if r.task.is_source}
        self.held = {
            r.rid
            for r in self.reps.values()
            if r.worker in loops & sourced and not (r.task.is_source or r.task.engine)
        }
        self.rr: dict[tuple[str, str], int] = {}
        self.latencies: list[float] = []
        self.cross: dict[str, int] = {}
        self.ends: dict[str, int] = {}
        self.last_sink = 0.0
        #: engine tasks: the most items their engine had in calls at once
        self.engine_load: dict[str, int] = {}

    def _least(self, t: TaskModel) -> int:
        """The fewest packets a step of ``t`` takes (enough for the head's batch)."""
        most = self.m.max_packets
        return min(most, max(1, t.fill_size)) if self.m.step_budget_s else most

    def _pace(self, r: _Replica, popped: int, took: float) -> None:
        if self.m.step_budget_s:
            take = paced_take(
                popped,
                took,
                budget_s=self.m.step_budget_s,
                least=self._least(r.task),
                most=self.m.max_packets,
            )
            r.take = r.take if take is None else take

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
            pulled = t.pull.draw(n, r.rng) if t.pull else t.pull_s * n
            took = pulled + (t.service.draw(n, r.rng) if t.service.by_size else 0.0)
            batch = [self.now + pulled] * n  # stamped once pulled (approximately)
        else:
            batch = r.pending
            r.pending = []
            n = len(batch)
            r.cpu = t.service.draw(n, r.rng)
            took = r.cpu + r.received_s
            r.received_s = 0.0
            r.sizes[n] = r.sizes.get(n, 0) + 1
        r.batches += 1
        r.busy_s += took
        self._work(r, took, functools.partial(self._done, r, batch), r.run_on, n)

    def _work(
        self,
        r: _Replica,
        seconds: float,
        then: Callable[[], None],
        on: str = "",
        items: int = 0,
        follows: bool = False,
    ) -> None:
        """``seconds`` of service for ``r`` on ``on`` (its worker's CPU by default),
        then ``then()``; ``follows``: in the same turn as its step (sending)."""
        w = self.workers[on or r.worker]
        self._advance()
        w.active[r.rid] = seconds
        w.then[r.rid] = then
        w.joined(r.rid, self.now, follows)
        if w.engine:  # the engine sees calls of at most the contract's batch size
            call = min(max(1, items), max(1, r.task.fill_size))
            w.size[r.rid] = (call, r.task.service)
            load = sum(k for k, _ in w.size.values())
            self.engine_load[r.task.name] = max(
                self.engine_load.get(r.task.name, 0), load
            )
        self._reschedule()

    def _rates(self) -> dict[str, dict[str, float]]:
        """Per worker (or engine): the rate each of its active batches progresses at."""
        rates = {name: w.rates() for name, w in self.workers.items() if w.active}
        if self.host_cores:
            cpus = [w for w in self.workers.values() if not w.engine]
            using = sum(w.running() for w in cpus)
            if using > self.host_cores:
                cut = self.host_cores / using
                for name, w in self.workers.items():
                    if name in rates and not w.engine:
                        rates[name] = {k: v * cut for k, v in rates[name].items()}
        return rates

    def _advance(self) -> None:
        elapsed = self.now - self._since
        if elapsed > 0:
            for name, rates in self._rates().items():
                active = self.workers[name].active
                for rid, rate in rates.items():
                    active[rid] -= elapsed * rate
        self._since = self.now

    def _reschedule(self) -> None:
        self._version += 1
        waits = [
            max(0.0, self.workers[name].active[rid]) / rate
            for name, rates in self._rates().items()
            for rid, rate in rates.items()
            if rate > 0
        ]
        waits += [
            max(0.0, due - self.now)
            for w in self.workers.values()
            if (due := w.switch_due()) is not None
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
                w.size.pop(rid, None)
                finished.append(w.then.pop(rid))
        for then in finished:
            then()
        for w in self.workers.values():
            w.settle(self.now)
            due = w.switch_due()
            if due is not None and due <= self.now + 1e-12:
                w.switch(self.now)
        self._reschedule()

    def _done(self, r: _Replica, batch: list[float]) -> None:
        r.busy = False
        if r.held_from:  # senders elsewhere get it back once this step is done
            for sender in r.held_from:
                self._credited(r, sender)
            r.held_from = []
        t = r.task
        if not t.is_source:
            self._pace(r, r.popped, self.now - r.step_start)
            w = self.workers[r.worker]
            if w.loop and not t.engine and r.steps.offload(r.cpu, r.cpu):
                w.leave_loop()  # its steps move to a thread: GIL turns from now
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
                self.ends[r.worker] = self.ends.get(r.worker, 0) + cross
                if self.m.transport_s:
                    cost = cross * self._end_s(t, SEND_SHARE)
                    send = functools.partial(self._push_out, r)
                    self._work(r, cost, send, follows=True)
                    return
        self._push_out(r)

    def _end_s(self, t: TaskModel, share: float) -> float:
        """CPU a packet crossing workers costs the worker of ``t``'s replica at
        its end: the task's own (``JobModel.end_s``), else ``share`` of
        ``transport_s``."""
        got = self.m.end_s.get(t.name)
        return (self.m.transport_s or 0.0) * share if got is None else got

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
                    items, r.rng.choices(dsts, weights, k=len(items)), strict=True
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
            if self._full(dst, r):
                if r.blocked_on is None:
                    r.blocked_since = self.now
                r.blocked_on = d
                self.waiters[d].append(r)
                if self.held and r.task.is_source:
                    self._release(r.worker)
                return
            r.out.popleft()
            dst.queue.append((self.now, packet, r.rid))
            dst.owed[r.rid] = dst.owed.get(r.rid, 0) + 1
            if dst.worker != r.worker:
                dst.received_s += self._end_s(dst.task, 1.0 - SEND_SHARE)
                self.ends[dst.worker] = self.ends.get(dst.worker, 0) + 1
            self._try_start(dst)
        if r.blocked_on is not None:
            r.blocked_s += self.now - r.blocked_since
            r.blocked_on = None
        if r.task.is_source:
            if r.left > 0:
                self._want_slot(r)
            elif self.held:
                self._release(r.worker)
        else:
            self._try_start(r)

    def _full(self, dst: _Replica, sender: _Replica) -> bool:
        """Whether ``sender`` has no credit left for ``dst``: its own quota is
        used up (Dask), or the queue its senders share is full, counting the
        packets whose credit ``dst``'s running step holds from other workers."""
        if dst.quota:
            return dst.owed.get(sender.rid, 0) >= dst.quota
        if not dst.capacity:
            return False
        held = len(dst.held_from) if dst.worker != sender.worker else 0
        return len(dst.queue) + held >= dst.capacity

    def _release(self, worker: str) -> None:
        """The replicas held on ``worker`` start: its source blocked or ended."""
        for rid in [x for x in self.held if self.reps[x].worker == worker]:
            self.held.discard(rid)
            self._try_start(self.reps[rid])

    def _try_start(self, r: _Replica) -> None:
        if r.busy or r.blocked_on is not None or r.out or r.rid in self.held:
            return
        got = 0
        held: list[str] = []
        if r.queue:
            while r.queue and got < r.take:
                queued_at, packet, sender = r.queue.popleft()
                got += 1
                held.append(sender)
                r.items_in += len(packet)
                r.queue_wait_s += (self.now - queued_at) * len(packet)
                if not r.pending:
                    r.pending_since = self.now
                r.pending.extend(packet)
        # start before waking blocked writers: their packets must not join this step
        # beyond its take (they would through the re-entrant _try_start)
        if r.pending:
            t = r.task
            due = r.pending_since + t.fill_wait_s
            if t.fill_wait_s and len(r.pending) < t.fill_size and self.now < due:
                if not r.timer:
                    r.timer = True
                    self.at(due, lambda: self._fill_due(r))
                self._credit(r, held, on_loop=False)
                self._pace(r, got, 0.0)  # popped into the batch being filled
            else:
                r.popped, r.step_start = got, self.now
                self._credit(r, held, on_loop=self.workers[r.worker].loop)
                self._want_slot(r)
        self._wake_writers(r)

    def _credit(self, r: _Replica, senders: list[str], *, on_loop: bool) -> None:
        """Packets ``r`` took from ``senders``: their credit goes back now, or,
        from senders on other workers to a step on an event loop, once the step
        ends (``held_from``)."""
        for sender in senders:
            if on_loop and not r.task.engine and self.reps[sender].worker != r.worker:
                r.held_from.append(sender)
            else:
                self._credited(r, sender)

    def _credited(self, r: _Replica, sender: str) -> None:
        """One credit of ``sender``'s to ``r`` goes back."""
        r.owed[sender] -= 1
        if self.reps[sender].blocked_on == r.rid:
            self.at(self.now, functools.partial(self._wake_writers, r))

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
            if t.name in self.engine_load:
                ops[t.name]["engine_items"] = self.engine_load[t.name]
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
            cross_ends=dict(self.ends),
        )


def _loop_workers(model: JobModel) -> set[str]:
    """Workers all of whose replicas (but those calling an engine) ran their steps
    on the worker's event loop in the recorded run (``TaskModel.loop``). A worker
    leaves the set when the runtime's rule (``LoopSteps``), fed the modelled
    steps, moves one of its replicas' steps to a thread (bigger packets, say)."""
    on: dict[str, bool] = {}
    for t in model.tasks:
        if t.engine:
            continue
        for rid in t.replicas:
            w = model.worker_of.get(rid, "?")
            on[w] = on.get(w, True) and t.loop
    return {w for w, all_on in on.items() if all_on}


def simulate(
    model: JobModel, *, seed: int = 0, host_cores: int | None = None
) -> SimResult:
    """Run the model of ``model`` once (deterministic for a seed); ``host_cores``
    caps the CPUs all workers share (workers on one machine), None: no cap."""
    return Simulator(model, seed=seed, host_cores=host_cores).run()
