"""Where the simulator's batches run (``sim.Simulator``), and at what speed while
several run at once.

A worker process's active batches share its ``slots`` CPUs equally (processor
sharing), except where a single-slot worker takes turns as CPython's GIL does
(``switch_s``, ``sys.getswitchinterval()``): one batch runs; a thread that wants the
GIL waits until the holder blocks (its replica has nothing more to do, or its
downstream is full) or for ``switch_s``, after which the holder must drop it and
wait with the others. Which waiting thread gets it next is drawn at random
(``rng``): CPython signals one waiter of a condition variable, each waiter
re-enters that wait every interval, and a thread back from a blocking call takes
a free GIL before a woken one can, so there is no queue order to follow; with
three or more threads contending, an unlucky one waits several turns, which is
the tail the runs show (a first-come order gave an operator at parallelism 2
on the local runtime a p99 of 79 ms against 105 measured; drawn, 105). A replica
whose next step starts as its last one ends keeps the GIL (its thread never
blocked). Throughput is that of processor sharing;
what turns add is the wait of a replica woken beside a busy one: a sink beside a
compute-bound operator waits up to a switch interval for each packet. A
Dask worker whose steps all run on its event loop (``loop``) takes turns
without a switch interval: a step runs to its end, and the replica goes behind
the others that are ready; it counts the passes its loop makes (``passes``) and
holds messages from other workers until the pass they are read in (``mail``). An
external engine (a task's ``Contract.engine``) batches the calls active on it as a
continuous-batching server does: calls of k_1..k_n items progress at
f(k_i) / f(k_1 + ... + k_n) each, f being the task's measured service time per
call size.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sage_core.diagnosis.model import ServiceModel


@dataclass(slots=True)
class Server:
    """A worker process: its active batches share ``slots`` CPUs equally; or an
    external engine (``engine``): they progress as one batch (module docstring).
    ``active`` holds each batch's service seconds left, ``then`` what runs when it
    ends."""

    slots: int
    active: dict[str, float] = field(default_factory=dict)
    then: dict[str, Callable[[], None]] = field(default_factory=dict)
    engine: bool = False
    #: engines: items and service model of each active batch
    size: dict[str, tuple[int, ServiceModel]] = field(default_factory=dict)
    #: engines: f(k) per (service model, k), computed once (a fit is not cheap)
    means: dict[tuple[int, int], float] = field(default_factory=dict)
    #: seconds a waiting thread lets the GIL holder run (0: processor sharing)
    switch_s: float = 0.0
    holder: str | None = None
    held_since: float = 0.0
    #: batches waiting for the GIL, in the order they asked, with when they asked
    waiting: dict[str, float] = field(default_factory=dict)
    #: draws which waiting batch gets the GIL next (None: the first to ask)
    rng: random.Random | None = None
    #: a Dask worker whose steps all run on its event loop: one step at a time, to
    #: its end, the others in the order they became ready (no switch interval)
    loop: bool = False
    #: a loop: the passes it completed (a pass ends once every batch waiting
    #: when it began had its turn) and the batches this one still owes a turn
    passes: int = 0
    to_pass: set[str] = field(default_factory=set)
    #: a loop: messages from other workers, each with the pass it is read in
    mail: deque[tuple[int, Callable[[], None]]] = field(default_factory=deque)
    #: whether batches take turns (GIL) rather than share the CPU (set once: it
    #: is read on every event)
    turns: bool = field(init=False)

    def __post_init__(self) -> None:
        self._set_turns()

    def _set_turns(self) -> None:
        single = self.slots == 1 and not self.engine
        self.turns = single and (bool(self.switch_s) or self.loop)

    def leave_loop(self) -> None:
        """A replica's steps moved to a thread: the worker's batches take GIL
        turns (or share its CPU) from now on."""
        self.loop = False
        self._set_turns()

    def finished(self) -> list[str]:
        """The active batches whose work is done and that end now: on a loop only
        the holder's (a turn, even one of no work, ends only once it came)."""
        done = [rid for rid, left in self.active.items() if left <= 1e-12]
        return [rid for rid in done if rid == self.holder] if self.loop else done

    def running(self) -> int:
        """Batches progressing now (for the host's CPU cap)."""
        if self.turns:
            return 1 if self.holder in self.active else 0
        return min(len(self.active), self.slots)

    def joined(self, rid: str, now: float, follows: bool = False) -> None:
        """Batch ``rid`` became active: it holds the GIL or waits for it. On an
        event loop a step that follows its replica's last one waits for the steps
        that became ready meanwhile (each replica's loop yields after a step);
        work that ``follows`` the step in the same turn (sending its output)
        does not."""
        if not self.turns:
            return
        if rid == self.holder:
            if self.loop and not follows:  # its next turn
                if self.waiting:
                    self.holder, self.held_since = self._next(), now
                    self.waiting[rid] = now
                self._turned(rid)
            return
        if self.holder is None:
            self.holder, self.held_since = rid, now
            self._turned(None)
        else:
            self.waiting.setdefault(rid, now)

    def settle(self, now: float) -> None:
        """After a step's end and what followed it: a holder with nothing active
        (its thread blocked) hands the GIL to a waiter."""
        if self.turns and self.holder is not None and self.holder not in self.active:
            old, self.holder = self.holder, None
            if self.waiting:
                self.holder = self._next()
                self.held_since = now
            self._turned(old)

    def _turned(self, old: str | None) -> None:
        """On a loop: the turn of ``old`` is over; a pass ends once every batch
        that was ready when it began has had its turn."""
        if not self.loop:
            return
        self.to_pass.discard(old or "")
        if not self.to_pass:
            self.passes += 1
            self.to_pass = set(self.waiting)
            if self.holder is not None:
                self.to_pass.add(self.holder)

    def post(self, fn: Callable[[], None], passes: int) -> bool:
        """A message from another worker for this loop: False when it is read at
        once (the loop is idle, or this is no loop), else it is read ``passes``
        passes from now (``read``)."""
        if not self.loop or not self.active:
            return False
        self.mail.append((self.passes + passes, fn))
        return True

    def read(self) -> list[Callable[[], None]]:
        """The messages due: their pass came, or the loop has nothing to run."""
        due = []
        while self.mail and (
            self.mail[0][0] <= self.passes or not self.active or not self.loop
        ):
            due.append(self.mail.popleft()[1])
        return due

    def switch_due(self) -> float | None:
        """When the holder must drop the GIL (None: nobody waits)."""
        if not self.turns or self.loop or self.holder is None or not self.waiting:
            return None
        return max(self.held_since, next(iter(self.waiting.values()))) + self.switch_s

    def switch(self, now: float) -> None:
        """The holder drops the GIL to a waiter and waits with the others."""
        old, self.holder = self.holder, self._next()
        self.held_since = now
        if old is not None and old in self.active:
            self.waiting[old] = now

    def _next(self) -> str:
        """The waiting batch that takes the GIL (``rng``), no longer waiting."""
        if self.rng and not self.loop and len(self.waiting) > 1:
            rid = self.rng.choice(list(self.waiting))
        else:
            rid = next(iter(self.waiting))
        del self.waiting[rid]
        return rid

    def mean(self, f: ServiceModel, k: int) -> float:
        key = (id(f), k)
        got = self.means.get(key)
        if got is None:
            got = self.means[key] = f.mean(k)
        return got

    def rates(self) -> dict[str, float]:
        """The share of its own service time each active batch gets done per second."""
        if self.turns:
            return {self.holder: 1.0} if self.holder in self.active else {}
        if not self.engine:
            return dict.fromkeys(self.active, min(1.0, self.slots / len(self.active)))
        total = sum(self.size[rid][0] for rid in self.active)
        out = {}
        for rid in self.active:
            k, f = self.size[rid]
            own, together = self.mean(f, k), self.mean(f, total)
            out[rid] = min(1.0, own / together) if own > 0 and together > 0 else 1.0
        return out
