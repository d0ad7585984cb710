"""Emulated devices: the timeline that runs the steps of the engines placed on one.

A :class:`Device` owns one timeline: a single asyncio task executes the steps of every
engine placed on it. With ``sharing="turns"`` (the default) it runs one step at a
time, taking turns among the engines that have work (as kernels of co-located engine
processes time-share one GPU); with ``sharing="processor"`` every engine with work
runs its step at once, each at 1/k of the device's speed while k steps are in
progress (as processes share a CPU core under the OS scheduler), and with
``idle_spin_s`` an engine keeps its share that long after its last step (vLLM's CPU
worker spin-waits 1 s for its next step before it sleeps, so two such engines on one
core each run at about half speed whenever both served in the last second). Engines
on different devices never wait for each other. With ``sharing="timeslice"`` the
engines hold the device in turn for ``timeslice_ms`` at a time, and a step in
progress is preempted at the end of its slice when another engine has work (as the
GPU time-slices the contexts of co-located engine processes: compute preemption
since Pascal, slices of 2, 10 or 30 ms by ``nvidia-smi compute-policy``); an engine
alone keeps the device slice after slice, and the device passes on at the end of
each step. Context switches cost nothing here. Step durations come from the profile
(:mod:`sage_plugins.emulator.profile`); the task sleeps until each step's emulated end
on a clock that does not drift when the event loop is late. ``time_scale`` stretches
every step in wall time (2.0: an emulated second lasts two), so a busy host's
scheduling delays weigh less against the emulated times.

The engines (their steps, queues and metrics) are in
:mod:`sage_plugins.emulator.engines`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sage_plugins.emulator.engines import Engine

SHARING = ("turns", "processor", "timeslice")


class Device:
    """One emulated accelerator: its engines' steps run one at a time, in turn
    (``sharing="turns"``), all at once at a shared speed (``"processor"``), or in
    slices of ``timeslice_ms`` that preempt a step in progress (``"timeslice"``)."""

    def __init__(
        self,
        name: str,
        time_scale: float = 1.0,
        sharing: str = "turns",
        idle_spin_s: float = 0.0,
        timeslice_ms: float | None = None,
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
        if timeslice_ms is not None and sharing != "timeslice":
            raise ValueError("timeslice_ms needs sharing: timeslice")
        ms = 2.0 if timeslice_ms is None else timeslice_ms
        if isinstance(ms, bool) or not isinstance(ms, int | float):
            raise TypeError(f"timeslice_ms must be a number of ms, got {ms!r}")
        if not 0.1 <= ms <= 1000:
            raise ValueError(f"timeslice_ms must be in [0.1, 1000] ms, got {ms!r}")
        self.name = name
        self.sharing = sharing
        #: emulated seconds an engine holds a timeslice device before it passes on
        self.timeslice_s = ms / 1e3
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
        elif self.sharing == "timeslice":
            await self._run_timeslice()
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

    def _after(self, holder: Engine | None, ready: list[Engine]) -> Engine:
        """The engine of ``ready`` next after ``holder`` in placement order."""
        if holder is None or holder not in self.engines:
            return ready[0]
        n, i = len(self.engines), self.engines.index(holder)
        for k in range(1, n + 1):
            engine = self.engines[(i + k) % n]
            if engine in ready:
                return engine
        return ready[0]

    async def _run_timeslice(self) -> None:
        """One engine holds the device at a time. Its step advances only while it
        holds it; when another engine has work, it passes the device on at the end
        of its slice (the step resumes at its next slice) or of its step, whichever
        comes first. An engine plans its step when it first holds the device. A
        step that ends late gives the lateness, up to 2 ms, to its engine's next
        step (as ``_run_processor_sharing`` does)."""
        slice_wall = self.timeslice_s * self.time_scale
        steps: dict[Engine, list[Any]] = {}  # engine -> [emulated s left, step, start]
        early: dict[Engine, float] = {}
        holder: Engine | None = None
        slice_end = last = time.monotonic()
        while True:
            now = time.monotonic()
            slack = self._late / self.time_scale
            if holder is not None and holder in steps:
                entry = steps[holder]
                entry[0] -= (now - last) / self.time_scale
                if entry[0] <= slack + 1e-9:
                    del steps[holder]
                    early[holder] = min(-entry[0], 0.002 / self.time_scale)
                    if self.on_step is not None:
                        self.on_step(holder, entry[2], now)
                    holder.commit(entry[1])
            last = now
            self.wake.clear()
            ready = [e for e in self.engines if e in steps or e.has_work()]
            if not ready:
                holder = None
                await self.wake.wait()
                last = time.monotonic()
                continue
            others = any(e is not holder for e in ready)
            if holder not in ready or (
                others and (holder not in steps or now >= slice_end - self._late)
            ):
                holder = self._after(holder, ready)
                slice_end = now + slice_wall
            elif now >= slice_end:  # alone: its slices follow one another
                slice_end += slice_wall * (1 + (now - slice_end) // slice_wall)
            if holder not in steps:
                duration, step = self._start_step(holder)
                steps[holder] = [duration - early.pop(holder, 0.0), step, now]
            for engine in list(early):
                if engine not in ready:
                    del early[engine]  # idle: no lateness to make up
            wait = steps[holder][0] * self.time_scale
            if others:
                wait = min(wait, slice_end - now)
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
