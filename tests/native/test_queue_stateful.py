"""Differential state machine: the native BoundedQueue against the deque reference."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sage_core import _reference
from sage_core.channels import BoundedQueue

pytestmark = pytest.mark.native

timeouts = st.sampled_from([0, 0, 0.0005, 0.001])
items = st.integers() | st.text(max_size=3) | st.none()


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    """The result of a call, or the name of the error it raised (and .pushed)."""
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the twins differ; compare by name
        return (type(exc).__name__, getattr(exc, "pushed", None))


class QueueMachine(RuleBasedStateMachine):
    native: BoundedQueue
    ref: _reference.ReferenceQueue

    @initialize(capacity=st.integers(1, 6))
    def make(self, capacity: int) -> None:
        self.native = BoundedQueue(capacity)
        self.ref = _reference.ReferenceQueue(capacity)

    def both(self, name: str, *args: Any) -> None:
        got = outcome(getattr(self.native, name), *args)
        want = outcome(getattr(self.ref, name), *args)
        assert got == want, (name, args)

    @rule(item=items)
    def try_push(self, item: Any) -> None:
        self.both("try_push", item)

    @rule()
    def try_pop(self) -> None:
        self.both("try_pop")

    @rule(item=items, timeout=timeouts)
    def push(self, item: Any, timeout: float) -> None:
        self.both("push", item, timeout)

    @rule(timeout=timeouts)
    def pop(self, timeout: float) -> None:
        self.both("pop", timeout)

    @rule(batch=st.lists(items, max_size=8), timeout=timeouts)
    def push_many(self, batch: list[Any], timeout: float) -> None:
        self.both("push_many", batch, timeout)

    @rule(max_n=st.integers(1, 8), timeout=timeouts)
    def pop_many(self, max_n: int, timeout: float) -> None:
        self.both("pop_many", max_n, timeout)

    @precondition(lambda self: not self.ref.closed)
    @rule()
    def close(self) -> None:
        self.both("close")

    @rule(timeout=st.none())
    def wait_forever_only_when_it_cannot_block(self, timeout: None) -> None:
        if self.ref.size:
            self.both("pop", timeout)
        elif self.ref.closed:
            self.both("pop_many", 3, timeout)

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "ref"):
            return
        stats = self.native.stats()
        assert (self.native.size, self.native.closed) == (
            self.ref.size,
            self.ref.closed,
        )
        assert (stats.pushed, stats.popped, stats.high_watermark) == (
            self.ref.pushed,
            self.ref.popped,
            self.ref.high_watermark,
        )


QueueMachine.TestCase.settings = settings(max_examples=100, deadline=None)
test_native_queue_matches_reference = QueueMachine.TestCase
