"""Cross-thread hand-off through bounded queues (pytest-benchmark).

Producers push N integers, consumers pop them all; one round is one full hand-off.
Peers measured in the same run: ``queue.Queue`` (items one by one, and lists of a
batch per put: the like-for-like peer of batched hand-off), and a minimal bounded
``collections.deque`` queue with two conditions (not-empty/not-full).
``bench/queue_report.py`` turns the JSON into items/s, ratios and a plot.

    nox -s bench-queue              # full size, bench/results/queue*.json
    nox -s bench-queue -- --smoke   # tiny sizes, bench/results/queue*-smoke.json
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from typing import Any

import pytest

from sage_core.channels import BoundedQueue, QueueClosed

CAPACITY = 1024
N_ITEM = 200_000
N_BATCH = 1_000_000
ROUNDS = 9
SMOKE_DIVISOR = 100  # --smoke: 1/100 of the items, one round
STOP = object()


class DequeCondition:
    """The usual hand-rolled bounded queue: a deque, one lock, two conditions.

    Like ``queue.Queue`` it waits on ``not_full`` to put and on ``not_empty`` to get,
    so a put wakes only getters and a get wakes only putters.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: deque[Any] = deque()
        lock = threading.Lock()
        self.not_empty = threading.Condition(lock)
        self.not_full = threading.Condition(lock)

    def put(self, item: Any) -> None:
        with self.not_full:
            while len(self.items) >= self.capacity:
                self.not_full.wait()
            self.items.append(item)
            self.not_empty.notify()

    def get(self) -> Any:
        with self.not_empty:
            while not self.items:
                self.not_empty.wait()
            item = self.items.popleft()
            self.not_full.notify()
            return item

    def put_many(self, batch: list[Any]) -> None:
        i = 0
        with self.not_full:
            while i < len(batch):
                while len(self.items) >= self.capacity:
                    self.not_full.wait()
                room = self.capacity - len(self.items)
                self.items.extend(batch[i : i + room])
                i += room
                self.not_empty.notify()
            if len(self.items) < self.capacity:  # room left: wake another putter
                self.not_full.notify()

    def get_many(self, n: int) -> list[Any]:
        with self.not_empty:
            while not self.items:
                self.not_empty.wait()
            out = [self.items.popleft() for _ in range(min(n, len(self.items)))]
            self.not_full.notify()
            if self.items:  # more left: let another getter take them
                self.not_empty.notify()
            return out


def _producer(impl: str, q: Any, n: int, batch: int) -> None:
    if batch == 1:
        put = q.push if impl == "sage" else q.put
        for i in range(n):
            put(i)
        return
    chunks = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    if impl == "sage":
        for chunk in chunks:
            q.push_many(chunk)
    elif impl == "deque+Condition":
        for chunk in chunks:
            q.put_many(chunk)
    elif impl == "queue.Queue-lists":
        for chunk in chunks:
            q.put(chunk)
    else:  # queue.Queue has no batch operation: item by item
        for chunk in chunks:
            for item in chunk:
                q.put(item)


def _consumer(impl: str, q: Any, batch: int, counts: list[int]) -> None:
    got = 0
    if impl == "sage":
        while True:
            try:
                got += len(q.pop_many(batch)) if batch > 1 else (q.pop(), 1)[1]
            except QueueClosed:  # the end of the stream
                break
    elif batch > 1 and impl == "deque+Condition":
        while True:
            items = q.get_many(batch)
            stops = sum(1 for item in items if item is STOP)
            got += len(items) - stops
            if stops:
                for _ in range(stops - 1):  # one stop per consumer: hand back the rest
                    q.put(STOP)
                break
    elif impl == "queue.Queue-lists":
        while (item := q.get()) is not STOP:
            got += len(item)
    else:
        while q.get() is not STOP:
            got += 1
    counts.append(got)


def handoff(impl: str, producers: int, consumers: int, batch: int, n: int) -> int:
    """Move n items from `producers` threads to `consumers` threads; return count."""
    if impl == "sage":
        q: Any = BoundedQueue(CAPACITY)
    elif impl == "deque+Condition":
        q = DequeCondition(CAPACITY)
    elif impl == "queue.Queue-lists":
        q = queue.Queue(max(1, CAPACITY // batch))  # the same number of items in flight
    else:
        q = queue.Queue(CAPACITY)
    counts: list[int] = []
    cons = [
        threading.Thread(target=_consumer, args=(impl, q, batch, counts))
        for _ in range(consumers)
    ]
    prods = [
        threading.Thread(target=_producer, args=(impl, q, n // producers, batch))
        for _ in range(producers)
    ]
    for t in cons + prods:
        t.start()
    for t in prods:
        t.join()
    if impl == "sage":
        q.close()
    else:
        for _ in range(consumers):
            q.put(STOP)
    for t in cons:
        t.join()
    total = sum(counts)
    assert total == (n // producers) * producers, (impl, total)
    return total


SCENARIOS = [(1, 1, 1), (2, 2, 1), (1, 1, 64), (2, 2, 64), (1, 1, 256), (2, 2, 256)]
IMPLS = ["sage", "queue.Queue", "deque+Condition", "queue.Queue-lists"]


CASES = [
    (impl, *scenario)
    for scenario in SCENARIOS
    for impl in IMPLS
    if not (impl == "queue.Queue-lists" and scenario[2] == 1)  # = the per-item case
]


@pytest.mark.parametrize(("impl", "producers", "consumers", "batch"), CASES)
def test_handoff(
    benchmark: Any,
    request: pytest.FixtureRequest,
    impl: str,
    producers: int,
    consumers: int,
    batch: int,
) -> None:
    smoke = bool(request.config.getoption("--smoke"))
    n = N_ITEM if batch == 1 else N_BATCH
    if impl == "queue.Queue" and batch > 1:
        n = N_ITEM  # item by item: keep the round short
    if smoke:
        n //= SMOKE_DIVISOR
    benchmark.group = f"{producers}p{consumers}c-batch{batch}"
    benchmark.extra_info.update(
        impl=impl, producers=producers, consumers=consumers, batch=batch, items=n
    )
    benchmark.pedantic(
        handoff,
        args=(impl, producers, consumers, batch, n),
        rounds=1 if smoke else ROUNDS,
        iterations=1,
        warmup_rounds=0 if smoke else 1,
    )
    benchmark.extra_info["load_avg"] = list(os.getloadavg())
