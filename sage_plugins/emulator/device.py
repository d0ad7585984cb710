"""Emulated devices and the engines placed on them.

A :class:`Device` owns one timeline: a single asyncio task executes the steps of every
engine placed on it. With ``sharing="turns"`` (the default) it runs one step at a
time, taking turns among the engines that have work (as kernels of co-located engine
processes time-share one GPU); with ``sharing="processor"`` every engine with work
runs its step at once, each at 1/k of the device's speed while k steps are in
progress (as processes share a CPU core under the OS scheduler), and with
``idle_spin_s`` an engine keeps its share that long after its last step (vLLM's CPU
worker spin-waits 1 s for its next step before it sleeps, so two such engines on one
core each run at about half speed whenever both served in the last second). Engines
on different devices never wait for each other. Step durations come from the profile
(:mod:`sage_plugins.emulator.profile`); the task sleeps until each step's emulated end
on a clock that does not drift when the event loop is late. ``time_scale`` stretches
every step in wall time (2.0: an emulated second lasts two), so a busy host's
scheduling delays weigh less against the emulated times.

:class:`LLMEngine` emulates continuous batching with chunked prefill and a KV cache
(recompute preemption of the newest sequence when the cache is full); a request
reaches its scheduler ``request_overhead_ms`` after it arrives (the server's own path:
HTTP, tokenisation), which takes no device time;
:class:`EmbeddingEngine` batches queued inputs up to the profile's limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sage_plugins.emulator.profile import EmbeddingTiming, LLMTiming, jitter


@dataclass(eq=False)
class Sequence:
    """One generation request inside an emulated LLM engine."""

    prompt_tokens: int
    max_tokens: int
    stream: bool = False
    tokens: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)
    finished: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    prefilled: int = 0
    generated: int = 0
    state: str = "waiting"  # waiting, running, done

    @property
    def context(self) -> int:
        """Tokens whose KV must be computed before the next token."""
        return self.prompt_tokens + self.generated


class Engine:
    """What a device asks of an engine: work pending, and one step at a time."""

    kind = ""

    def __init__(self, engine_id: str, model: str) -> None:
        self.id = engine_id
        self.model = model
        #: draws each step's jitter (the profile's ``*_cv``), seeded by the id
        self.rng = random.Random(engine_id)
        self.device: Device | None = None
        self.steps = 0
        self.busy_s = 0.0

    def has_work(self) -> bool:
        raise TypeError(f"{type(self).__name__} must implement has_work()")

    def plan(self) -> tuple[float, Any]:
        """Choose the next step: (emulated seconds, what commit() gets)."""
        raise TypeError(f"{type(self).__name__} must implement plan()")

    def commit(self, step: Any) -> None:
        """The step's emulated time has passed: deliver its results."""
        raise TypeError(f"{type(self).__name__} must implement commit()")

    def metrics(self) -> dict[str, float]:
        raise TypeError(f"{type(self).__name__} must implement metrics()")

    def poke(self) -> None:
        if self.device is not None:
            self.device.wake.set()


class LLMEngine(Engine):
    """Continuous batching: each step decodes one token for every running sequence
    and spends the rest of the token budget on (chunked) prefill."""

    kind = "llm"

    def __init__(self, engine_id: str, model: str, timing: LLMTiming) -> None:
        super().__init__(engine_id, model)
        self.timing = timing
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0
        self.generated_tokens = 0

    def submit(
        self, prompt_tokens: int, max_tokens: int, *, stream: bool = False
    ) -> Sequence:
        """Queue a generation.

        Raises:
            ValueError: prompt + max_tokens cannot fit in the KV cache.
        """
        seq = Sequence(max(1, prompt_tokens), max(1, max_tokens), stream)
        if seq.prompt_tokens + seq.max_tokens > self.timing.kv_capacity_tokens:
            raise ValueError(
                f"prompt ({seq.prompt_tokens} tokens) + max_tokens "
                f"({seq.max_tokens}) exceed the KV cache "
                f"({self.timing.kv_capacity_tokens} tokens)"
            )
        scale = self.device.time_scale if self.device is not None else 1.0
        delay = self.timing.request_overhead_ms / 1000.0 * scale
        if delay > 0:
            seq.state = "arriving"
            asyncio.get_running_loop().call_later(delay, self._admit, seq)
        else:
            self._admit(seq)
        return seq

    def _admit(self, seq: Sequence) -> None:
        """The request reaches the scheduler's waiting queue (unless aborted)."""
        if seq.state == "done":
            return
        seq.state = "waiting"
        self.waiting.append(seq)
        self.poke()

    def abort(self, seq: Sequence) -> None:
        if seq.state == "waiting":
            self.waiting.remove(seq)
        seq.state = "done"

    def kv_used(self) -> int:
        return sum(s.prefilled for s in self.running if s.state == "running")

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _preempt(self, kv: int) -> int:
        """Free KV for one decode token per running sequence: the newest sequences
        go back to the head of the waiting queue and recompute later."""
        cap = self.timing.kv_capacity_tokens
        while self.running and kv + len(self.running) > cap:
            victim = self.running.pop()
            kv -= victim.prefilled
            victim.prefilled = 0
            victim.state = "waiting"
            self.waiting.appendleft(victim)
            self.preemptions += 1
        return kv

    def plan(self) -> tuple[float, Any]:
        t = self.timing
        self.running = [s for s in self.running if s.state == "running"]
        kv = self._preempt(self.kv_used())
        decode, chunks = [], []
        budget = t.max_batched_tokens
        for seq in self.running:
            if seq.generated and seq.context - seq.prefilled == 1:
                decode.append(seq)
        budget -= len(decode)
        kv += len(decode)
        for seq in self.running:  # partially prefilled sequences go on first
            pending = seq.context - seq.prefilled
            if budget > 0 and not (seq.generated and pending == 1):
                n = min(budget, pending, t.kv_capacity_tokens - kv)
                if n > 0:
                    chunks.append((seq, n))
                    budget -= n
                    kv += n
        while (
            self.waiting
            and budget > 0
            and len(self.running) < t.max_num_seqs
            and kv + min(budget, self.waiting[0].context) <= t.kv_capacity_tokens
        ):
            seq = self.waiting.popleft()
            seq.state = "running"
            self.running.append(seq)
            n = min(budget, seq.context)
            chunks.append((seq, n))
            budget -= n
            kv += n
        prefill = sum(n for _, n in chunks)
        took = t.step_s(prefill, len(decode), kv) * jitter(t.step_cv, self.rng)
        return took, (decode, chunks)

    def _emit(self, seq: Sequence) -> None:
        seq.generated += 1
        self.generated_tokens += 1
        if seq.stream:
            seq.tokens.put_nowait(seq.generated)
        if seq.generated >= seq.max_tokens:
            seq.state = "done"
            if seq.stream:
                seq.tokens.put_nowait(None)
            if not seq.finished.done():
                seq.finished.set_result(None)

    def commit(self, step: Any) -> None:
        decode, chunks = step
        for seq, n in chunks:
            if seq.state != "running":
                continue
            seq.prefilled += n
            if seq.prefilled >= seq.context:  # prefill done: this step samples
                self._emit(seq)
        for seq in decode:
            if seq.state == "running":
                seq.prefilled += 1  # the last sampled token's KV
                self._emit(seq)
        self.running = [s for s in self.running if s.state == "running"]

    def metrics(self) -> dict[str, float]:
        return {
            "num_requests_running": sum(
                1 for s in self.running if s.state == "running"
            ),
            "num_requests_waiting": len(self.waiting),
            "gpu_cache_usage_perc": self.kv_used() / self.timing.kv_capacity_tokens,
            "num_preemptions_total": self.preemptions,
            "generation_tokens_total": self.generated_tokens,
        }


@dataclass(eq=False)
class EmbeddingJob:
    inputs: list[int]  # tokens per input
    done: asyncio.Future[None]


def pseudo_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for a text (the emulator computes no embedding)."""
    import numpy as np

    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest())
    vector = np.random.default_rng(seed).standard_normal(dimensions)
    vector /= float(np.linalg.norm(vector)) or 1.0
    return [float(v) for v in vector]


class EmbeddingEngine(Engine):
    """Queued embedding requests run in batches of whole requests."""

    kind = "embedding"

    def __init__(self, engine_id: str, model: str, timing: EmbeddingTiming) -> None:
        super().__init__(engine_id, model)
        self.timing = timing
        self.queue: deque[EmbeddingJob] = deque()
        self.running = 0
        self.embedded = 0

    def submit(self, inputs: list[int]) -> EmbeddingJob:
        job = EmbeddingJob(inputs, asyncio.get_running_loop().create_future())
        self.queue.append(job)
        self.poke()
        return job

    def has_work(self) -> bool:
        return bool(self.queue)

    def plan(self) -> tuple[float, Any]:
        t = self.timing
        batch = [self.queue.popleft()]
        inputs, tokens = len(batch[0].inputs), sum(batch[0].inputs)
        while self.queue:
            nxt = self.queue[0]
            if (
                inputs + len(nxt.inputs) > t.max_batch_inputs
                or tokens + sum(nxt.inputs) > t.max_batch_tokens
            ):
                break
            batch.append(self.queue.popleft())
            inputs += len(nxt.inputs)
            tokens += sum(nxt.inputs)
        self.running = len(batch)
        return t.batch_s(inputs, tokens) * jitter(t.batch_cv, self.rng), batch

    def commit(self, step: Any) -> None:
        for job in step:
            self.embedded += len(job.inputs)
            if not job.done.done():
                job.done.set_result(None)
        self.running = 0

    def metrics(self) -> dict[str, float]:
        return {
            "num_requests_running": self.running,
            "num_requests_waiting": len(self.queue),
            "gpu_cache_usage_perc": 0.0,
            "num_preemptions_total": 0,
            "embedded_inputs_total": self.embedded,
        }


SHARING = ("turns", "processor")


class Device:
    """One emulated accelerator: its engines' steps run one at a time, in turn
    (``sharing="turns"``), or all at once at a shared speed (``"processor"``)."""

    def __init__(
        self,
        name: str,
        time_scale: float = 1.0,
        sharing: str = "turns",
        idle_spin_s: float = 0.0,
    ) -> None:
        if sharing not in SHARING:
            raise ValueError(f"sharing must be one of {SHARING}, got {sharing!r}")
        spin = idle_spin_s
        if isinstance(spin, bool) or not isinstance(spin, int | float):
            raise TypeError(f"idle_spin_s must be a number of seconds, got {spin!r}")
        if spin and sharing != "processor":
            raise ValueError("idle_spin_s needs sharing: processor")
        if not 0 <= spin <= 60:
            raise ValueError(f"idle_spin_s must be in [0, 60] seconds, got {spin!r}")
        self.name = name
        self.sharing = sharing
        self.idle_spin_s = idle_spin_s
        self.time_scale = time_scale  # wall seconds per emulated second
        self.engines: list[Engine] = []
        self.wake = asyncio.Event()
        self.busy_s = 0.0
        self._turn = 0
        self._clock = 0.0
        #: how late the event loop's timer wakes this device (moving average, s)
        self._late = 0.0
        #: called with (engine, start, end) on the device clock of each step
        self.on_step: Callable[[Engine, float, float], object] | None = None

    def place(self, engine: Engine) -> None:
        engine.device = self
        self.engines.append(engine)

    def _next(self) -> Engine | None:
        n = len(self.engines)
        for i in range(n):
            engine = self.engines[(self._turn + i) % n]
            if engine.has_work():
                self._turn = (self._turn + i + 1) % n
                return engine
        return None

    async def run(self) -> None:
        if self.sharing == "processor":
            await self._run_processor_sharing()
        else:
            await self._run_turns()

    def _start_step(self, engine: Engine) -> tuple[float, Any]:
        duration, step = engine.plan()
        engine.steps += 1
        engine.busy_s += duration
        self.busy_s += duration
        return duration, step

    async def _run_processor_sharing(self) -> None:
        """Every engine with work has one step in progress; while k engines share
        the device, each step advances at 1/k of its speed. An engine keeps its
        share for ``idle_spin_s`` after its last step (it spin-waits for the next
        one, as vLLM's CPU workers do for 1 s). A step that ends late (the event
        loop woke late) gives the lateness, up to 2 ms, to its engine's next step."""
        active: dict[Engine, list[Any]] = {}  # engine -> [left s, step, start]
        early: dict[Engine, float] = {}
        ended: dict[Engine, float] = {}  # engine -> wall time its last step ended
        spin = self.idle_spin_s * self.time_scale
        last, sharers = time.monotonic(), 1
        while True:
            now = time.monotonic()
            done = (now - last) / (sharers * self.time_scale)
            for entry in active.values():
                entry[0] -= done
            last = now
            # a step due within the timer's usual lateness ends now: waiting for
            # it would wake that much late again (epoll rounds timeouts up to ms)
            slack = self._late / (sharers * self.time_scale)
            for engine, (left, step, start) in list(active.items()):
                if left <= slack + 1e-9:
                    del active[engine]
                    early[engine] = min(-left, 0.002 / self.time_scale)
                    ended[engine] = now
                    if self.on_step is not None:
                        self.on_step(engine, start, now)
                    engine.commit(step)
            self.wake.clear()
            for engine in self.engines:
                if engine not in active and engine.has_work():
                    duration, step = self._start_step(engine)
                    active[engine] = [duration - early.pop(engine, 0.0), step, now]
                elif engine not in active:
                    early.pop(engine, None)  # idle: no lateness to make up
            spinning = [
                ended[e] + spin
                for e in self.engines
                if e not in active and e in ended and ended[e] + spin > now
            ]
            sharers = max(1, len(active) + len(spinning))
            if not active:
                await self.wake.wait()
                last = time.monotonic()
                continue
            left = min(entry[0] for entry in active.values())
            wait = max(0.0, left) * sharers * self.time_scale
            if spinning:  # a spinning engine gives its share back then
                wait = min(wait, min(spinning) - now)
            wait = max(0.0, wait - self._late)
            try:
                await asyncio.wait_for(self.wake.wait(), wait)
            except TimeoutError:  # woke by the timer: how late, on average
                late = time.monotonic() - (now + wait)
                self._late += 0.1 * (min(max(late, 0.0), 0.005) - self._late)

    async def _run_turns(self) -> None:
        while True:
            engine = self._next()
            if engine is None:
                self.wake.clear()
                await self.wake.wait()
                continue
            duration, step = self._start_step(engine)
            now = time.monotonic()
            # a step starts when the previous one ended, or now if the device idled
            start = max(self._clock, now - 0.002)
            self._clock = start + duration * self.time_scale
            if self.on_step is not None:
                self.on_step(engine, start, self._clock)
            delay = self._clock - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            engine.commit(step)
