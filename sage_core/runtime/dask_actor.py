"""A replica as a Dask actor: the worker loop of ``ReplicaCore`` on the worker's
event loop.

Every public method is ``async`` and never blocks the event loop for long: the loop
pops what its ``Inbox`` holds (non-blocking), runs the chain, and hands outbound
packets to one outlet per downstream replica (``transport.py``), awaiting only for
credit. A replica's first steps run in its own thread (a first step that blocks for
seconds, e.g. an LLM call, must not stall the other replicas of the worker); after
``PROBE_STEPS`` short ones in a row its steps move to the event loop, and a step that
runs long there (a heavy operator, a source that sleeps) moves them back to the
thread for good; the event loop only awaits it. The rule is
``compiler.settings.LoopSteps``, which the what-if model follows too.
The master drives an actor through ``open`` -> ``run`` (returns when the replica is
done, with its results) and may ``cancel`` it; ``snapshot`` reads live metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sage_core.compiler.plan import ExecutionPlan
from sage_core.compiler.settings import LoopSteps, offload_cpu_s
from sage_core.observe.histogram import LatencyHistogram
from sage_core.observe.metrics import ReplicaMetrics
from sage_core.observe.traces import TraceLog
from sage_core.plugins import load_plugins
from sage_core.runtime.barriers import checkpoint
from sage_core.runtime.dask_checkpoint import ActorCheckpoints
from sage_core.runtime.dask_links import ActorLinks, upstream_replicas
from sage_core.runtime.deadletter import DeadLetters
from sage_core.runtime.link import LinkPool, LinkServer
from sage_core.runtime.operators import OperatorFailure, encode_failure
from sage_core.runtime.transport import Inbox, TransportError
from sage_core.runtime.worker import ReplicaCore

logger = logging.getLogger(__name__)
_perf = time.perf_counter

#: a step (one ``handle``/``produce`` call) that computes longer than this (its
#: thread's CPU) moves the replica's steps to its own thread. Beyond a few GIL
#: switch intervals that keeps the worker's event loop responsive: a thread lets
#: the loop in every interval (5 ms), where a step on the loop holds it to the end.
#: Below, a thread gains the loop little and costs every step a hand-off: a COMPUTE
#: pipeline of 5 ms steps ran 25-30% slower with them in a thread, and a limit of
#: 5 ms of wall time made such a replica move in some runs and not in others
OFFLOAD_CPU_S = offload_cpu_s()
_thread_cpu = time.thread_time


def _timed(fn: Any, args: tuple[Any, ...]) -> tuple[Any, float, float]:
    """``fn(*args)``, the seconds it took and the CPU seconds of its thread."""
    t0, c0 = _perf(), _thread_cpu()
    out = fn(*args)
    return out, _perf() - t0, _thread_cpu() - c0


class ReplicaActor(ActorLinks, ActorCheckpoints):
    """One replica of a plan, hosted by a Dask worker (create with ``actor=True``)."""

    def __init__(self, plan_json: str, replica: str, job_id: str) -> None:
        load_plugins()  # names resolve on this worker
        from distributed import get_worker

        self.worker = get_worker().address
        plan = ExecutionPlan.from_json(plan_json)
        self.plan, self.replica, self.job_id = plan, replica, job_id
        rp = next(r for r in plan.replicas if r.id == replica)
        task = plan.task(rp.task)
        self.metrics = ReplicaMetrics(replica, task.name, task.operators)
        # dead letters are kept per actor and written to the job's sink by the master
        quiet = dataclasses.replace(
            plan,
            settings=dataclasses.replace(plan.settings, dead_letter_sink=None),
        )
        self._dead = DeadLetters(quiet, job_id)
        self._traces = TraceLog() if plan.settings.trace_every else None
        self.core = ReplicaCore(
            plan,
            replica,
            job_id=job_id,
            dead_letter=self._dead.for_replica(replica),
            traces=self._traces,
            metrics=self.metrics,
        )
        self.senders = upstream_replicas(plan, replica)
        self.inbox: Inbox | None = None
        if not self.core.is_source:
            self.inbox = Inbox(rp.queue_capacity, self.senders)
            self.metrics.queue = self.inbox.queue
        self.outlets: list[Any] = []
        self._links = LinkServer(self.push, self.wait_credit)
        self._pools: list[LinkPool] = []
        self.service = LatencyHistogram()
        self.latency = LatencyHistogram()
        self._thread: ThreadPoolExecutor | None = None
        self._offloaded = False
        self._steps = LoopSteps()  # where the steps run (thread, then loop)
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        self._draining = False  # drain(): a source stops producing, ends normally
        self._opened = False
        self._started = 0.0
        self._loop_cpu0 = 0.0
        self._init_checkpoints()

    # -- lifecycle -------------------------------------------------------------

    def _executor(self) -> ThreadPoolExecutor:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(
                1, thread_name_prefix=f"sage-{self.replica}"
            )
        return self._thread

    async def open(self, restore: tuple[str, int, int] | None = None) -> str:
        """Open the operators (in the replica's thread: model loading may be slow),
        first restoring checkpoint ``(checkpoint_dir, retained, epoch)`` if given."""
        loop = asyncio.get_running_loop()
        self._bind_acks()
        await loop.run_in_executor(self._executor(), self._restore, restore)
        await loop.run_in_executor(self._executor(), self.core.open)
        self._opened = True
        return self.worker

    async def _step(self, fn: Any, *args: Any) -> Any:
        if self._offloaded:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor(), fn, *args)
        if self._steps.probing:
            loop = asyncio.get_running_loop()
            out, took, cpu = await loop.run_in_executor(
                self._executor(), _timed, fn, args
            )
            if self._steps.offload(cpu, took):
                self._offloaded = True
                logger.debug("replica %s steps stay in their own thread", self.replica)
            return out
        out, took, cpu = _timed(fn, args)
        self.metrics.loop_step_cpu_s += cpu
        if self._steps.offload(cpu, took):
            self._offloaded = True
            logger.debug("replica %s steps move to their own thread", self.replica)
        return out

    async def _emit(self, outbound: list[tuple[int, Any]]) -> None:
        if len(outbound) == 1:
            slot, packet = outbound[0]
            blocked = await self.outlets[slot].send([packet])
        else:
            by_slot: dict[int, list[Any]] = {}
            for slot, packet in outbound:
                by_slot.setdefault(slot, []).append(packet)
            blocked = 0.0
            for slot, packets in by_slot.items():
                blocked += await self.outlets[slot].send(packets)
        if blocked:
            self.core.note_blocked(blocked)

    def _record(self, packets: list[Any], start: float, end: float) -> None:
        service = end - start
        n = 0
        for p in packets:
            if type(p) is tuple:
                k = len(p[0])
                n += k
                self.latency.record(end - p[2], k)
        if n:
            self.service.record(service / n, n)

    async def _loop(self) -> None:
        core, m = self.core, self.metrics
        if core.is_source:
            pulled = m.operators[core.ops[0].name]
            while not self._cancelled and not self._draining:
                if core.rewires:
                    await self._emit(core.apply_rewires())
                if core.barrier_request > core.epoch:
                    await self._emit(checkpoint(core, core.barrier_request))
                t0, n0 = _perf(), pulled.items_out
                out = await self._step(core.produce)
                if out is None:
                    break
                n = pulled.items_out - n0
                if n:
                    per_item = (_perf() - t0) / n
                    self.service.record(per_item, n)
                    self.latency.record(per_item, n)
                if out:
                    await self._emit(out)
                await asyncio.sleep(0)  # let pushes and other replicas in
        else:
            inbox = self.inbox
            assert inbox is not None
            while not core.done and not self._cancelled:
                if core.rewires:
                    await self._emit(core.apply_rewires())
                packets = inbox.pop(core.take)
                if not packets:
                    t0 = _perf()
                    await inbox.wait(core.wait_hint(t0))
                    m.idle_s += _perf() - t0
                    packets = inbox.pop(core.take)
                    if not packets and not core.pending:
                        continue
                t0 = _perf()
                out = await self._step(core.handle, packets)
                self._record(packets, t0, _perf())
                if out:
                    await self._emit(out)
                await asyncio.sleep(0)
        if not self._cancelled:
            await self._emit(core.finish())
            for outlet in self.outlets:
                await outlet.drain()

    async def run(self) -> dict[str, Any]:
        """Run the replica to the end of its input; its results, state and metrics.

        Failures come back as ``{"status": "failed", "error": blob}`` (see
        ``decode_failure``) so that the master can name them exactly.
        """
        self._started = _perf()
        self._loop_cpu0 = _thread_cpu()  # on the worker's event loop, as run() is
        self._task = asyncio.current_task()
        status, error = "succeeded", None
        try:
            await self._loop()
            if self._cancelled:
                status = "cancelled"
            else:
                self._check_drained()
        except asyncio.CancelledError:
            status = "cancelled"
        except BaseException as exc:  # noqa: BLE001 - reported to the master
            status, error = "failed", encode_failure(exc)
            if not isinstance(exc, OperatorFailure):
                logger.error("replica %s failed: %r", self.replica, exc)
        finally:
            if self.inbox is not None:
                self.inbox.close()  # a push from now on is an error, never a drop
            self._close_links()
        result, state, final = None, {}, None
        if self._opened:
            try:
                final = self._end_checkpoints(status == "succeeded")
                if not self._deferred:
                    self.core.close()
                result, state = self.core.results(), self.core.state()
            except Exception as exc:  # noqa: BLE001
                if error is None:
                    status, error = "failed", encode_failure(exc)
        if self._thread is not None:
            self._thread.shutdown(wait=False)
        self.metrics.state = status if status != "succeeded" else "finished"
        return {
            "replica": self.replica,
            "status": status,
            "error": error,
            "result": result,
            "state": state,
            "metrics": self._snapshot(),
            "dead_letters": self._dead.records(),
            "traces": self._traces.records() if self._traces is not None else [],
            "final": final,
        }

    def _check_drained(self) -> None:
        """After end of stream from every sender nothing may be left unprocessed.

        Raises:
            TransportError: packets arrived after an end-of-stream marker.
        """
        inbox = self.inbox
        if inbox is not None and (inbox.queue.size or inbox.held):
            raise TransportError(
                f"replica {self.replica}: {inbox.queue.size + inbox.held} packets "
                f"arrived after end of stream from every upstream replica"
            )

    async def cancel(self) -> None:
        """Stop promptly: the run loop ends, waiting senders and receivers wake."""
        self._cancelled = True
        if self.inbox is not None:
            self.inbox.close()
        self._close_links()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    async def drain(self) -> None:
        """A source stops producing and ends normally (end of stream downstream), so
        the items in flight still reach the sinks; other replicas ignore it."""
        self._draining = True

    # -- observation -----------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        snap = self.metrics.snapshot()
        snap["worker"] = self.worker
        snap["service_hist"] = self.service.snapshot()
        snap["latency_hist"] = self.latency.snapshot()
        snap["offloaded"] = self._offloaded
        snap["uptime_s"] = _perf() - self._started if self._started else 0.0
        # called on the worker's event loop (run(), the async snapshot()): the CPU
        # that loop used since this replica started, its steps' and the worker's
        snap["loop_cpu_s"] = _thread_cpu() - self._loop_cpu0 if self._started else 0.0
        snap["outlets"] = [
            {
                "remote": o.remote,
                "credits": o.credits,
                **(
                    {"calls": o.calls, "bytes": o.bytes_sent, "link": o.link}
                    if o.remote
                    else {}
                ),
            }
            for o in self.outlets
        ]
        return snap

    async def snapshot(self) -> dict[str, Any]:
        """Live counters, latency histograms and the input queue's depth."""
        return self._snapshot()
