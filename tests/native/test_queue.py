"""BoundedQueue: API rules, timeouts, close, reference counting, threads, asyncio."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import tracemalloc
import weakref

import pytest

from sage_core.channels import BoundedQueue, QueueClosed, QueueStats, QueueTimeout
from sage_core.common.errors import SageError

pytestmark = pytest.mark.native


class Payload:
    """A plain object whose lifetime the tests watch through weak references."""

    def __init__(self, n: int = 0) -> None:
        self.n = n


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        BoundedQueue(0)


def test_fifo_and_non_blocking_paths() -> None:
    q = BoundedQueue(3)
    assert (q.capacity, q.size, q.closed) == (3, 0, False)
    assert q.try_pop() == (False, None)
    assert [q.try_push(i) for i in range(4)] == [True, True, True, False]
    assert q.size == 3
    assert q.try_pop() == (True, 0)
    assert q.pop() == 1
    assert q.pop_many(10) == [2]


def test_push_many_pushes_what_fits_on_timeout() -> None:
    q = BoundedQueue(4)
    assert q.push_many(range(10), timeout=0) == 4
    assert q.push_many(["x"], timeout=0.01) == 0
    assert q.pop_many(2) == [0, 1]
    assert q.push_many(("a", "b", "c"), timeout=0.01) == 2
    assert q.pop_many(100) == [2, 3, "a", "b"]


def test_timeouts_raise_named_errors() -> None:
    q = BoundedQueue(1)
    with pytest.raises(QueueTimeout, match="pop timed out"):
        q.pop(timeout=0.01)
    assert q.pop_many(5, timeout=0.01) == []
    q.push("a")
    with pytest.raises(QueueTimeout, match="push timed out"):
        q.push("b", timeout=0.01)
    with pytest.raises(QueueTimeout):
        q.push("b", timeout=0)
    assert issubclass(QueueTimeout, SageError)
    assert issubclass(QueueTimeout, TimeoutError)
    assert issubclass(QueueClosed, SageError)


@pytest.mark.parametrize("bad", [-1.0, -1e-9, float("nan"), float("-inf")])
def test_bad_timeout_is_rejected(bad: float) -> None:
    q = BoundedQueue(1)
    with pytest.raises(ValueError, match="timeout must be"):
        q.pop(timeout=bad)


def test_pop_many_rejects_zero() -> None:
    with pytest.raises(ValueError, match="max_n must be at least 1"):
        BoundedQueue(1).pop_many(0)


def test_close_drains_then_raises() -> None:
    q = BoundedQueue(4)
    q.push_many([1, 2, 3])
    q.close()
    q.close()  # idempotent
    assert q.closed
    with pytest.raises(QueueClosed):
        q.push(4)
    with pytest.raises(QueueClosed):
        q.try_push(4)
    assert q.pop() == 1
    assert q.try_pop() == (True, 2)
    assert q.pop_many(10) == [3]
    for op in (q.pop, q.try_pop, lambda: q.pop_many(1, timeout=0)):
        with pytest.raises(QueueClosed):
            op()


def test_close_wakes_every_waiter() -> None:
    full = BoundedQueue(1)
    full.push("x")
    empty = BoundedQueue(1)
    errors: list[BaseException] = []

    def wait(op: object) -> None:
        try:
            op()  # type: ignore[operator]
        except QueueClosed as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=wait, args=(lambda: empty.pop(),)),
        threading.Thread(target=wait, args=(lambda: empty.pop_many(8),)),
        threading.Thread(target=wait, args=(lambda: full.push("y"),)),
        threading.Thread(target=wait, args=(lambda: full.push_many(["y", "z"]),)),
    ]
    for t in threads:
        t.start()
    time.sleep(0.05)
    empty.close()
    full.close()
    for t in threads:
        t.join(10)
    assert len(errors) == 4
    assert {exc.pushed for exc in errors} == {0}


def test_push_many_reports_partial_count_when_closed() -> None:
    q = BoundedQueue(2)
    result: list[QueueClosed] = []

    def producer() -> None:
        try:
            q.push_many(range(5))
        except QueueClosed as exc:
            result.append(exc)

    t = threading.Thread(target=producer)
    t.start()
    deadline = time.monotonic() + 10
    while q.size < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    q.close()
    t.join(10)
    assert result[0].pushed == 2
    assert q.pop_many(10) == [0, 1]


def test_blocking_push_resumes_when_space_frees() -> None:
    q = BoundedQueue(1)
    q.push("first")
    t = threading.Thread(target=lambda: q.push("second", timeout=30))
    t.start()
    deadline = time.monotonic() + 10
    while q.stats().producer_blocks == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert q.pop(timeout=30) == "first"
    assert q.pop(timeout=30) == "second"
    t.join(10)
    stats = q.stats()
    assert stats.producer_blocks == 1
    assert stats.producer_blocked_s > 0


def test_wait_room_returns_when_a_pop_frees_a_slot_and_pushes_nothing() -> None:
    q = BoundedQueue(1)
    assert q.wait_room(timeout=0) is True  # empty: room at once
    q.push("first")
    assert q.wait_room(timeout=0) is False
    assert q.wait_room(timeout=0.01) is False
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(q.wait_room(timeout=30)))
    t.start()
    deadline = time.monotonic() + 10
    while q.stats().producer_blocks < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert q.pop(timeout=30) == "first"
    t.join(10)
    assert got == [True]
    assert q.size == 0  # waiting for room put nothing in
    assert q.try_push("second")


def test_wait_room_is_woken_by_close_and_rejects_bad_timeouts() -> None:
    q = BoundedQueue(1)
    q.push("x")
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            q.wait_room()
        except QueueClosed as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(10)
    assert len(errors) == 1
    with pytest.raises(QueueClosed):
        q.wait_room(timeout=0)
    with pytest.raises(ValueError, match="timeout must be"):
        BoundedQueue(1).wait_room(timeout=float("nan"))


def test_stats_count_everything() -> None:
    q = BoundedQueue(5)
    q.push_many(range(4))
    q.pop_many(3)
    q.try_push("x")
    q.pop_many(1, timeout=0.01)
    q.pop_many(1, timeout=0.01)
    q.pop_many(1, timeout=0.01)
    stats = q.stats()
    assert isinstance(stats, QueueStats)
    assert (stats.pushed, stats.popped, stats.size) == (5, 5, 0)
    assert stats.high_watermark == 4
    assert stats.consumer_waits == 1
    assert stats.consumer_wait_s > 0
    assert stats.producer_blocked_s == 0.0
    assert repr(q) == "<BoundedQueue 0/5 open>"


def test_references_are_held_and_released() -> None:
    obj = Payload()
    base = sys.getrefcount(obj)
    q = BoundedQueue(64)
    for _ in range(2000):
        q.push(obj)
        assert q.try_push(obj)
        q.push_many([obj, obj, obj], timeout=0)
        assert sys.getrefcount(obj) == base + 5
        q.pop()
        q.try_pop()
        q.pop_many(3)
    assert sys.getrefcount(obj) == base
    # refused pushes hold nothing
    full = BoundedQueue(1)
    full.push(1)
    assert not full.try_push(obj)
    assert full.push_many([obj] * 3, timeout=0) == 0
    with pytest.raises(QueueTimeout):
        full.push(obj, timeout=0.001)
    assert sys.getrefcount(obj) == base


def test_items_left_in_a_destroyed_queue_are_released() -> None:
    q = BoundedQueue(10)
    items = [Payload(i) for i in range(10)]
    refs = [weakref.ref(item) for item in items]
    q.push_many(items)
    del items
    assert all(r() is not None for r in refs)
    del q
    assert all(r() is None for r in refs)


def test_reference_cycles_through_the_queue_are_collected() -> None:
    q = BoundedQueue(2)
    holder = Payload()
    holder.queue = q  # type: ignore[attr-defined]
    q.push(holder)
    ref = weakref.ref(holder)
    del q, holder
    gc.collect()
    assert ref() is None


def test_no_memory_growth_over_a_million_operations() -> None:
    q = BoundedQueue(256)
    batch = [Payload(i) for i in range(64)]

    def churn(rounds: int) -> None:
        for _ in range(rounds):
            q.push_many(batch)
            q.pop_many(64)
            for item in batch[:8]:
                q.try_push(item)
                q.try_pop()

    churn(100)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        churn(12_500)  # 12.5k * (64 + 64 + 16) ops ~ 1.8M
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 64 * 1024
    assert sys.getrefcount(batch[0]) == sys.getrefcount(batch[1])


def _produce(q: BoundedQueue, pid: int, n: int) -> None:
    i = 0
    while i < n:
        if i % 3 == 0:
            chunk = [(pid, j) for j in range(i, min(i + 17, n))]
            pushed = 0
            while pushed < len(chunk):
                pushed += q.push_many(chunk[pushed:], timeout=0.5)
            i += len(chunk)
        else:
            q.push((pid, i))
            i += 1


def _consume(q: BoundedQueue, out: list[tuple[int, int]]) -> None:
    while True:
        try:
            out.extend(q.pop_many(32, timeout=1.0))
        except QueueClosed:
            return


@pytest.mark.parametrize(("producers", "consumers"), [(4, 3), (3, 1), (1, 2)])
def test_every_item_is_delivered_exactly_once(producers: int, consumers: int) -> None:
    n = 20_000
    q = BoundedQueue(64)
    outs: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]
    cons = [threading.Thread(target=_consume, args=(q, out)) for out in outs]
    prods = [
        threading.Thread(target=_produce, args=(q, p, n)) for p in range(producers)
    ]
    for t in cons + prods:
        t.start()
    for t in prods:
        t.join(120)
    q.close()
    for t in cons:
        t.join(120)
    got = [item for out in outs for item in out]
    assert len(got) == producers * n
    assert set(got) == {(p, i) for p in range(producers) for i in range(n)}
    if consumers == 1:
        for p in range(producers):
            seq = [i for (pid, i) in outs[0] if pid == p]
            assert seq == list(range(n))
    stats = q.stats()
    assert stats.pushed == stats.popped == producers * n
    assert stats.high_watermark <= 64


def test_async_callers_poll_without_blocking() -> None:
    q = BoundedQueue(4)
    n = 2_000

    async def producer() -> None:
        for i in range(n):
            while not q.try_push(i):
                await asyncio.sleep(0)
        q.close()

    async def consumer() -> list[int]:
        got: list[int] = []
        while True:
            try:
                ok, item = q.try_pop()
            except QueueClosed:
                return got
            if ok:
                got.append(item)
            else:
                await asyncio.sleep(0)

    async def main() -> list[int]:
        _, got = await asyncio.gather(producer(), consumer())
        return got

    assert asyncio.run(main()) == list(range(n))


def test_queue_is_not_picklable() -> None:
    import pickle

    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(BoundedQueue(1))


def test_subclass_instances_are_native_queues() -> None:
    from sage_core import _native

    assert isinstance(BoundedQueue(1), _native.BoundedQueue)


def test_blocking_wait_in_the_main_thread_can_be_interrupted() -> None:
    import _thread
    import signal

    q = BoundedQueue(1)
    # Ctrl-C's usual handler, also where the runner was started with SIGINT ignored
    # (a background job of a non-interactive shell), which makes interrupt_main a no-op
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.05, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            q.pop(timeout=30)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    q.push("still usable")
    assert q.pop() == "still usable"


def test_pop_many_with_a_huge_max_n_allocates_only_the_capacity() -> None:
    q = BoundedQueue(3)
    q.push_many([1, 2, 3])
    assert q.pop_many(2**62) == [1, 2, 3]
