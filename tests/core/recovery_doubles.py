"""Test doubles for the recovery tests: operators that fail once on chosen items.

A fault on item ``x`` is armed by creating the file ``faults/x``; the operator that
meets ``x`` deletes the file and raises, so each fault fires once across restarts
and processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sage_core import MapFunction, OperatorContext

KEYS = 13


def arm(faults: Path, items: set[int]) -> str:
    """Create one fault file per item; returns the folder for ``faults=``."""
    faults.mkdir(parents=True, exist_ok=True)
    for x in items:
        (faults / str(x)).touch()
    return str(faults)


class _Faulty(MapFunction):
    def __init__(self, faults: str = "", pause_s: float = 0.0) -> None:
        super().__init__(faults=faults, pause_s=pause_s)
        self.faults, self.pause_s = faults, pause_s
        self.armed: set[int] = set()

    def open(self, context: OperatorContext) -> None:
        if self.faults:
            self.armed = {int(name) for name in os.listdir(self.faults)}

    def fault(self, item: int) -> None:
        if item in self.armed:
            self.armed.discard(item)
            try:
                os.unlink(os.path.join(self.faults, str(item)))
            except FileNotFoundError:
                return  # fired in an earlier attempt
            raise RuntimeError(f"injected fault on {item}")


class InjectedFaultDouble(_Faulty):
    """Passes items on; fails once on each armed item; sleeps ``pause_s`` per item."""

    def map(self, item: int) -> int:
        self.fault(item)
        if self.pause_s:
            time.sleep(self.pause_s)
        return item


class RunningCountDouble(_Faulty):
    """Running count per key in managed keyed state: emits ``[key, item, count]``;
    fails once on each armed item before counting it."""

    def open(self, context: OperatorContext) -> None:
        super().open(context)
        self.counts = context.keyed_state

    def map(self, item: int) -> list[Any]:
        self.fault(item)
        key = item % KEYS
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        return [key, item, count]


def expected_counts(n: int) -> list[list[int]]:
    """What the running-count pipeline over ``range(n)`` emits (any order)."""
    seen: dict[int, int] = {}
    out = []
    for x in range(n):
        k = x % KEYS
        seen[k] = seen.get(k, 0) + 1
        out.append([k, x, seen[k]])
    return out
