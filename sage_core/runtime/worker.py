"""The worker loop of one replica, separate from whatever drives it.

``ReplicaCore`` never blocks and never touches a queue: a driver pops packets from
the replica's input queue and hands them to ``handle()``, which runs the operator
chain and returns the outbound packets as ``(slot, packet)`` pairs; the driver pushes
them to the queues of ``core.targets[slot]`` (blocking, or ``try_push`` + ``await`` in
an async actor) and reports the time it waited with ``note_blocked()``. Source
replicas are driven through ``produce()``; ``finish()`` returns the last packets and
the end-of-stream markers.

Wire format: a packet is a tuple ``(items, input_index, sent_at, traces, sender)`` —
a micro-batch of at most ``settings.buffer_size`` items for one input of the
receiving replica, the ``perf_counter`` time it was sent (same-process queue wait),
the sampled traces riding on it (or None) and the sending replica's id. An
``EndOfStream`` marker follows the last packet on every channel; a replica is done
once it has one from every upstream replica of every input channel. With checkpoints
on, ``Barrier`` markers flow between packets (``runtime.barriers``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from sage_core.compiler.plan import ExecutionPlan, OperatorPlan
from sage_core.compiler.settings import paced_take, step_budget_s
from sage_core.functions import OperatorContext, SinkFunction, SourceFunction
from sage_core.observe.metrics import ReplicaMetrics
from sage_core.observe.traces import TraceLog, add_hop
from sage_core.runtime.barriers import Aligner
from sage_core.runtime.fused import FusedChain, fusable
from sage_core.runtime.join import JoinExecutor
from sage_core.runtime.operators import (
    EXECUTORS,
    DeadLetter,
    Executor,
    OperatorFailure,
    build_function,
    key_function,
)
from sage_core.runtime.outputs import Outbound, OutPort, Outputs
from sage_core.runtime.rewiring import WAKE, EndOfStream, Rewiring
from sage_core.runtime.source import produce

Packet = tuple[list[Any], int, float, list[dict[str, Any]] | None]
_perf = time.perf_counter
#: Fibonacci hashing's multiplier (2^64 / golden ratio)
_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


def traced(batch: int, every: int) -> bool:
    """Whether source batch number ``batch`` (from 1) is one of the one in ``every``
    that start a trace: the first, so that a short run has one, then a hash of the
    number, not ``batch % every``:
    a periodic choice aliases with round-robin routing, so that with ``every``
    equal to a downstream operator's parallelism every trace would pass through
    the same replica and the sampled latency would describe that one path."""
    if every <= 1 or batch == 1:
        return every >= 1
    return ((batch * _GOLDEN) & _MASK) >> 32 < (1 << 32) // every


class ReplicaCore(Rewiring):
    """Runs one replica's operator chain on packets; see the module docstring."""

    def __init__(
        self,
        plan: ExecutionPlan,
        replica_id: str,
        *,
        job_id: str,
        dead_letter: DeadLetter,
        traces: TraceLog | None = None,
        metrics: ReplicaMetrics | None = None,
    ) -> None:
        rp = next(r for r in plan.replicas if r.id == replica_id)
        task = plan.task(rp.task)
        self.plan, self.replica, self.job_id = plan, replica_id, job_id
        self.ops: list[OperatorPlan] = [plan.operator(n) for n in task.operators]
        self.metrics = metrics or ReplicaMetrics(replica_id, task.name, task.operators)
        self.functions = [build_function(op) for op in self.ops]
        self.contexts = [
            OperatorContext(
                op.name,
                rp.index,
                op.parallelism,
                job_id,
                rp.placement.worker,
                op.config,
                checkpointing=plan.settings.checkpoint_interval_s is not None,
                contract=op.contract,
            )
            for op in self.ops
        ]
        self.plan_replica = rp
        self.is_source = self.ops[0].role == "source"
        self.is_sink = self.ops[-1].role == "sink"
        self.executors: list[Executor] = []
        for i, (op, fn) in enumerate(zip(self.ops, self.functions, strict=True)):
            if op.role == "source":
                continue
            keyed = op.input_keys.get(0) if i == 0 else None
            cls = JoinExecutor if op.role == "join" else EXECUTORS[op.role]
            ex = cls(
                op,
                fn,
                replica=replica_id,
                stats=self.metrics.operators[op.name],
                dead_letter=dead_letter,
                key_of=key_function(keyed) if keyed else None,
            )
            if isinstance(ex, JoinExecutor):
                ex.setup(
                    (key_function(op.input_keys[0]), key_function(op.input_keys[1]))
                )
            self.executors.append(ex)
        s = plan.settings
        self.buffer_size = s.buffer_size
        self.latency_target_s = s.latency_target_ms / 1000.0
        self.linger_s = min(s.linger_ms / 1000.0, self.latency_target_s / 4)
        self.max_packets = s.max_packets
        self.source_pace = 0.0  # a source's seconds per item (``source.fill``)
        self.trace_every, self.traces = s.trace_every, traces
        head = self.ops[0].contract
        self.fill_wait_s = head.max_wait_ms / 1000.0 if head.batch_size > 1 else 0.0
        self.fill_size = head.batch_size
        #: packets the next step may pop (``pace``): never fewer than fill the head's
        #: batch, so a batching operator still batches across queued packets
        self.min_take = min(s.max_packets, head.batch_size)
        self.take = self.min_take
        #: a step's service ``pace`` aims within: the linger, or a quarter of the
        #: latency target where the linger is 0 (sources send at once; steps may
        #: still take the packets queued meanwhile)
        self.step_budget_s = step_budget_s(s.linger_ms, s.latency_target_ms)
        self.two_inputs = self.ops[0].role in ("co_map", "join")
        if self.two_inputs:
            self.fill_wait_s = 0.0
        self.outputs = Outputs(plan, task.name, replica_id, self.metrics)
        self._on_key_error = self._key_failed  # bound once: _emit is the hot path
        self.expected_eos = sum(
            1
            for ch in plan.inputs_of(task.name)
            for _, dsts in ch.routes
            if replica_id in dsts
        )
        self.eos_seen = 0
        self._init_rewiring()
        self._fused = (
            FusedChain(self.executors)
            if self.is_source
            and not self.ports
            and self.buffer_size == 1
            and fusable(self.executors)
            else None
        )
        self._fused_seen = [0] * len(self.executors)
        self.pending: list[Any] = []
        self.pending_traces: list[tuple[dict[str, Any], float]] = []
        self.pending_since = 0.0
        self.load_of: Callable[[int], float] = lambda slot: 0.0
        #: the driver's view of a target slot: 0 idle, 1 busy, 2 backlog
        self.pressure_of: Callable[[int], int] = lambda slot: 0
        self._source_iter: Iterator[Any] | None = None
        self._produced = 0
        self._batches = 0
        # checkpoints (runtime.barriers): the last barrier handled, the one a
        # source is asked for, where a restored source resumes, the ack callback
        self.epoch = 0
        self.barrier_request = 0
        self.source_offset = 0
        self.on_snapshot: Callable[[int, str, bytes], None] | None = None
        self.metrics_checkpoint_s = 0.0
        self.aligner: Aligner | None = None
        if plan.settings.checkpoint_interval_s is not None and not self.is_source:
            senders = {
                s
                for ch in plan.inputs_of(task.name)
                for s, d in ch.routes
                if rp.id in d
            }
            self.aligner = Aligner(self, senders)

    @property
    def targets(self) -> list[str]:
        """Downstream replica ids by slot (``Outputs.targets``)."""
        return self.outputs.targets

    @property
    def ports(self) -> list[OutPort]:
        """One ``OutPort`` per output channel (``Outputs.ports``)."""
        return self.outputs.ports

    # -- lifecycle -------------------------------------------------------------

    def open(self) -> None:
        for fn, ctx in zip(self.functions, self.contexts, strict=True):
            fn.open(ctx)
        if self.is_source:
            src = self.functions[0]
            assert isinstance(src, SourceFunction)
            ctx, offset = self.contexts[0], self.source_offset
            self._produced = offset
            self._source_iter = iter(
                src.run_from(ctx, offset) if offset else src.run(ctx)
            )
        self.metrics.state = "running"

    def close(self) -> None:
        for fn in self.functions:
            fn.close()

    def results(self) -> Any:
        """What the sink of this replica hands back (None for non-sinks)."""
        fn = self.functions[-1]
        return fn.result() if isinstance(fn, SinkFunction) else None

    @property
    def done(self) -> bool:
        return self.eos_seen >= self.expected_eos

    def wait_hint(self, now: float) -> float | None:
        """Seconds the driver may block on the input queue (None: until data)."""
        if not self.pending:
            return None
        return max(0.0, self.pending_since + self.fill_wait_s - now)

    def pace(self, popped: int, took: float) -> int:
        """Packets the next step may take, from this step's pace: as many as it
        processes within ``step_budget_s``, at most ``max_packets`` and at least
        enough to fill the head operator's batch (``Contract.batch_size``: a
        batching operator, an embedder or an LLM call, pays per call rather than
        per item, and batches across the packets queued before it).

        A step's outputs leave together after its last packet, so a step of ``k``
        slow packets adds their whole service to the first one's latency (after a
        stall, a replica of a 1 ms/item operator would otherwise catch up in one
        step and hold its first item for the rest); cheap packets still go many
        to a step, which is what keeps the per-step cost small at peak load."""
        take = paced_take(
            popped,
            took,
            budget_s=self.step_budget_s,
            least=self.min_take,
            most=self.max_packets,
        )
        if take is not None:
            self.take = take
        return self.take

    # -- processing ------------------------------------------------------------

    def _chain(self, items: list[Any], index: int, start: int = 0) -> list[Any]:
        for ex in self.executors[start:] if start else self.executors:
            t0 = _perf()
            n = len(items)
            st = ex.stats
            st.items_in += n
            items = ex.process(items, index)
            ex.seq += n
            st.service_s += _perf() - t0
            st.items_out += len(items)
            index = 0
            if not items:
                break
        return items

    def _run(
        self,
        items: list[Any],
        index: int,
        traced: list[tuple[dict[str, Any], float]] | None,
        now: float,
    ) -> Outbound:
        m = self.metrics
        t0 = m.step_started = _perf()
        m.step_items = len(items)
        try:
            outs = self._chain(items, index)
        finally:
            m.step_started, m.step_items = 0.0, 0
        t1 = _perf()
        m.items_in += len(items)
        m.batches += 1
        m.service_s += t1 - t0
        m.items_out += len(outs)
        m.note_batch(len(items), t1 - t0)
        traces = None
        if traced:
            traces = []
            # the wall clock at t1: transit spans processes, and hosts
            left = time.time() - (_perf() - t1)
            for trace, sent in traced:
                queued = left - (t1 - sent)
                add_hop(
                    trace,
                    replica=self.replica,
                    task=m.task,
                    items=len(items),
                    queue_wait_s=max(0.0, now - sent),
                    service_s=t1 - t0,
                    blocked_s=0.0,
                    transit_s=max(0.0, queued - trace.get("left_unix", queued)),
                )
                trace["left_unix"] = left
                if self.is_sink or not outs:
                    if self.traces is not None:
                        self.traces.finish(trace, "sink" if self.is_sink else "dropped")
                else:
                    traces.append(trace)
        return self._emit(outs, traces or None, t1) if outs else []

    def _emit(
        self, outs: list[Any], traces: list[dict[str, Any]] | None, now: float
    ) -> Outbound:
        return self.outputs.emit(outs, traces, now, self.load_of, self._on_key_error)

    def _key_failed(self, outs: list[Any], item: Any, exc: Exception) -> None:
        """An output item's key function raised: the chain's last operator's error
        policy decides (a source-only chain fails)."""
        if not self.executors:
            raise OperatorFailure(
                operator=self.ops[-1].name,
                replica=self.replica,
                sequence=self._produced,
                item=item,
                key=None,
                cause=exc,
            ) from exc
        self.executors[-1].failed(outs, item, exc)

    def handle(self, packets: list[Any]) -> Outbound:
        """Process popped packets (and end-of-stream markers, checkpoint barriers);
        return outbound ones.

        Packets for the same input are processed as one batch; a two-input head gets
        one batch per run of packets with the same input index. How long it took
        sets how many packets the next step takes (``pace``, read as ``take``).
        """
        t0 = _perf()
        if self.aligner is not None:
            out = self.aligner.handle(packets)
        else:
            out = self.process(packets)
        self.pace(len(packets), _perf() - t0)
        return out

    def process(self, packets: list[Any]) -> Outbound:
        """``handle`` without barriers (the aligner calls it between them)."""
        now = _perf()
        m = self.metrics
        m.packets_in += len(packets)
        out: Outbound = []
        parts: list[list[Any]] = []
        part_index = 0
        traced: list[tuple[dict[str, Any], float]] = []
        for p in packets:
            if type(p) is not tuple:
                if p is not WAKE:
                    self.eos_seen += 1
                continue
            items, index, sent, ptraces, _ = p
            m.queue_wait_s += (now - sent) * len(items)
            if parts and self.two_inputs and index != part_index:
                out += self._dispatch(_concat(parts), part_index, traced, now)
                parts, traced = [], []
            parts.append(items)
            part_index = index
            if ptraces:
                traced.extend((t, sent) for t in ptraces)
        if parts:
            out += self._dispatch(_concat(parts), part_index, traced, now)
        elif self.pending and (
            self.done or now - self.pending_since >= self.fill_wait_s
        ):
            out += self._flush_pending(now)
        return out

    def _dispatch(
        self,
        items: list[Any],
        index: int,
        traced: list[tuple[dict[str, Any], float]],
        now: float,
    ) -> Outbound:
        if not self.fill_wait_s:
            return self._run(items, index, traced, now)
        if not self.pending:
            self.pending_since = now
        self.pending.extend(items)
        self.pending_traces.extend(traced)
        if (
            len(self.pending) >= self.fill_size
            or now - self.pending_since >= self.fill_wait_s
        ):
            return self._flush_pending(now)
        return []

    def _flush_pending(self, now: float) -> Outbound:
        take, self.pending = self.pending, []
        tr, self.pending_traces = self.pending_traces, []
        return self._run(take, 0, tr, now) if take else []

    def produce(self) -> Outbound | None:
        """Pull the next micro-batch from the source; None when it is exhausted."""
        return produce(self)

    def pressure(self) -> int:
        """The highest pressure among the downstream targets (0 idle, 1 busy: items
        on the way, 2 backlog: items waiting for credit or queue room)."""
        of = self.pressure_of
        return max((of(slot) for slot in range(len(self.targets))), default=0)

    def trace_due(self, batch: int) -> bool:
        """Whether source batch number ``batch`` starts a sampled trace (``traced``)."""
        return self.traces is not None and traced(batch, self.trace_every)

    def note_blocked(self, seconds: float) -> None:
        """The driver waited ``seconds`` for room downstream after the last step
        (a traced packet's own wait goes to its trace as it is handed over:
        ``transport.handed_over``)."""
        self.metrics.blocked_s += seconds

    def finish(self) -> Outbound:
        """Flush what is pending and return the end-of-stream markers."""
        out = self._end_rewiring()
        now = _perf()
        out += self._flush_pending(now) if self.pending else []
        out += self._end_of_input(now)
        for port in self.ports:
            for slot in port.slots:
                out.append((slot, EndOfStream(port.channel, self.replica)))
        self.metrics.state = "finished"
        return out

    def _end_of_input(self, now: float) -> Outbound:
        """What the chain's operators still hold (``Function.end_of_input``), each
        operator's through the rest of the chain."""
        out: Outbound = []
        for i, ex in enumerate(self.executors):
            if ex.op.role == "sink":
                continue
            tail = list(ex.fn.end_of_input())
            if not tail:
                continue
            ex.stats.items_out += len(tail)
            items = self._chain(tail, 0, i + 1)
            self.metrics.items_out += len(items)
            if items and self.ports:
                out += self._emit(items, None, now)
        return out

    def state(self) -> dict[str, Any]:
        """Operator state of this replica (stateful operators and joins), by name."""
        snap: dict[str, Any] = {}
        executors = {ex.name: ex for ex in self.executors}
        for op, fn in zip(self.ops, self.functions, strict=True):
            ex = executors.get(op.name)
            value = ex.get_state() if isinstance(ex, JoinExecutor) else fn.get_state()
            if value is not None:
                snap[op.name] = value
        return snap


def _concat(parts: list[list[Any]]) -> list[Any]:
    if len(parts) == 1:
        return parts[0]
    return [x for part in parts for x in part]
