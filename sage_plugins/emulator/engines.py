"""Emulated engines: what a :class:`~sage_plugins.emulator.device.Device` runs.

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
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sage_plugins.emulator.profile import EmbeddingTiming, LLMTiming, jitter

if TYPE_CHECKING:
    from sage_plugins.emulator.device import Device


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
