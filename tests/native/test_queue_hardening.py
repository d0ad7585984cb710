"""BoundedQueue under hostile callers: re-entrant pops from finalizers, huge and
invalid timeouts, out-of-range capacities."""

from __future__ import annotations

import threading

import pytest

from sage_core.channels import BoundedQueue

from .isolated import assert_clean_exit, run_python

pytestmark = pytest.mark.native

# A finalizer in cyclic garbage pops a second queue while the first queue's pop_many
# builds its result list: with the list free-list used up (lists held alive), the
# list comes from the GC allocator, which runs the collector at threshold 1.
_REENTRANT_POP = """
import gc, sys, weakref
from sage_core.channels import BoundedQueue

class Payload:
    def __init__(self, tag, n):
        self.tag, self.n = tag, n

def run_once():
    outer, inner = BoundedQueue(64), BoundedQueue(64)
    outer_items = [Payload("outer", i) for i in range(40)]
    inner_items = [Payload("inner", i) for i in range(40)]
    refs = [weakref.ref(p) for p in outer_items + inner_items]
    outer.push_many(outer_items)
    inner.push_many(inner_items)
    base = [sys.getrefcount(p) for p in outer_items + inner_items]
    state = {"in_call": False, "inner": None, "during": False}

    class Popper:
        def __init__(self):
            self.cycle = self

        def __del__(self):
            state["during"] = state["in_call"] and outer.size == 0
            state["inner"] = inner.pop_many(64, timeout=0)

    gc.collect()
    gc.set_threshold(1)
    try:
        held = [[] for _ in range(200)]  # empties the list free-list
        Popper()
        state["in_call"] = True
        got = outer.pop_many(64, timeout=0)
        state["in_call"] = False
    finally:
        gc.set_threshold(700, 10, 10)
    del held
    gc.collect()
    if state["inner"] is None:
        return False
    assert [(p.tag, p.n) for p in got] == [("outer", i) for i in range(40)], [
        (p.tag, p.n) for p in got[:3]
    ]
    assert [(p.tag, p.n) for p in state["inner"]] == [("inner", i) for i in range(40)]
    # each object is referenced by the test's list and by exactly one result list
    # (the queue's references went to the callers, none lost or duplicated)
    after = [sys.getrefcount(p) for p in outer_items + inner_items]
    assert after == [b for b in base], (base[:3], after[:3])
    during = state["during"]
    del got, outer_items, inner_items, state
    gc.collect()
    assert all(r() is None for r in refs), "popped objects leaked"
    return during

hits = 0
for _ in range(50):
    during = run_once()
    hits += during
print("finalizer ran inside pop_many:", hits)
assert hits > 0, "the collector never ran inside pop_many; the test proves nothing"
"""


def test_finalizer_popping_another_queue_during_pop_many() -> None:
    proc = run_python(_REENTRANT_POP, timeout=120)
    assert_clean_exit(proc)


@pytest.mark.parametrize("huge", [1e10, 1e300, float("inf")])
def test_huge_timeouts_wait_forever(huge: float) -> None:
    q = BoundedQueue(1)
    late = threading.Timer(0.2, q.push, args=("late",))
    late.start()
    assert q.pop(timeout=huge) == "late"
    q.push("a")
    threading.Timer(0.2, q.pop).start()
    q.push("b", timeout=huge)
    assert q.pop_many(4, timeout=huge) == ["b"]
    threading.Timer(0.2, q.pop).start()
    q.push("c")
    assert q.push_many(["d"], timeout=huge) == 1
    late.join()


@pytest.mark.parametrize("bad", [-1.0, -1e-300, float("nan"), float("-inf")])
def test_nan_and_negative_timeouts_raise_value_error(bad: float) -> None:
    q = BoundedQueue(2)
    q.push(1)
    for call in (
        lambda: q.push(2, timeout=bad),
        lambda: q.pop(timeout=bad),
        lambda: q.push_many([2], timeout=bad),
        lambda: q.pop_many(1, timeout=bad),
    ):
        with pytest.raises(ValueError, match="timeout must be a number of seconds"):
            call()
    assert q.pop_many(4) == [1]


@pytest.mark.parametrize("capacity", [0, 2**26 + 1, 2**40, 2**63])
def test_capacity_out_of_range_is_a_value_error(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity must be"):
        BoundedQueue(capacity)


@pytest.mark.parametrize("capacity", [-1, 2**64, 2**100])
def test_capacity_that_is_no_size_is_a_type_error(capacity: int) -> None:
    with pytest.raises(TypeError):
        BoundedQueue(capacity)
