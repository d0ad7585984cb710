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
moves them by the runtime's rule, ``LoopSteps``, fed the modelled steps) runs them
one at a time, each to its end, in the order they became ready, a replica going
behind the others after each step (its loop awaits ``asyncio.sleep(0)``); there
is no switch interval. What a replica does in a turn happens when the turn comes:
it pops its packets as its step starts, and a sender woken by that pop pushes in
its own turn, after the step (``flow.PacketFlow``). Under that strict alternation
a queue keeps the level it had when the alternation began, and the traces show
the queue of a replica that shares a loop with its source full from the start
(7 of 8 packets of wait): the source runs alone until it first blocks, and the
model starts such replicas then. A message from another worker (a packet, a
credit reply) is read by a busy loop ``LOOP_PASSES`` passes after it arrives (a
pass ends once every replica ready when it began had its turn), at once by an
idle one: the traces' transit into a worker running 4.8 ms steps is 14.6-15.1 ms.
A sender on another worker gets its credit back through the receiver's loop, so
not before the step that took the packets ends. Not modelled: network latency,
pauses of the processes (the runs' p99 is 1.3-1.6x their median on Dask, the
model's 1.05x), operators whose cost depends on state.
"""

from __future__ import annotations

import functools
import heapq
import random
from itertools import count
from typing import TYPE_CHECKING, Any

from sage_core.compiler.settings import paced_take, quota
from sage_core.diagnosis.flow import SEND_SHARE, PacketFlow, Replica
from sage_core.diagnosis.results import QUANTILES, SimResult, percentile
from sage_core.diagnosis.servers import Server

__all__ = ["QUANTILES", "SimResult", "Simulator", "percentile", "simulate"]

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_core.diagnosis.model import (
        ChannelModel,
        JobModel,
        TaskModel,
    )


class Simulator(PacketFlow):
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
            for w in sorted(names)  # in one order whatever the hash seed
        }
        self.reps: dict[str, Replica] = {}
        for t in model.tasks:
            for rid in t.replicas:
                home = model.worker_of.get(rid, "?")
                on = f"engine:{t.engine}" if t.engine else home
                self.reps[rid] = Replica(
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
        self.waiters: dict[str, list[Replica]] = {rid: [] for rid in self.reps}
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

    def _pace(self, r: Replica, popped: int, took: float) -> None:
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

    def _want_slot(self, r: Replica, follows: bool = False) -> None:
        """``r`` has work: pull (sources) or process its pending batch;
        ``follows``: in the turn on its loop it took the batch in."""
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
        then = functools.partial(self._done, r, batch)
        self._work(r, took, then, r.run_on, n, follows)

    def _work(
        self,
        r: Replica,
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
            for rid in w.finished():
                del w.active[rid]
                w.size.pop(rid, None)
                finished.append(w.then.pop(rid))
        for then in finished:
            then()
        self._settle()
        mail = [fn for w in self.workers.values() if w.mail for fn in w.read()]
        for fn in mail:
            fn()
        if mail:
            self._settle()
        self._reschedule()

    def _settle(self) -> None:
        for w in self.workers.values():
            w.settle(self.now)
            due = w.switch_due()
            if due is not None and due <= self.now + 1e-12:
                w.switch(self.now)

    def _done(self, r: Replica, batch: list[float]) -> None:
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
