"""Properties of the local runtime against a single-threaded reference.

Random DAGs (sources, maps, filters, flat_maps, key_by + stateful counters, unions,
joins, co_maps) with random parallelism, queue capacities, packet sizes, routers and
chaining must give the same multiset of sink outputs and the same keyed state as the
reference; per-key order survives key_by; backpressure bounds what is in flight.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Multiset
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_core import Contract, LocalEnvironment, MapFunction, SinkFunction
from sage_core.api import DataStream

M = 1_000_003


class KeyedCounter(MapFunction):
    """Counts items per key (item % 5); emits key * 1000 + count (order-free multiset)."""

    contract = Contract(state="stateful")

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[int, int] = {}

    def map(self, item: int) -> int:
        key = item % 5
        self.counts[key] = self.counts.get(key, 0) + 1
        return key * 1000 + self.counts[key]

    def get_state(self) -> dict[int, int]:
        return dict(self.counts)


def _reference_counter(items: list[int]) -> tuple[list[int], dict[int, int]]:
    counts: dict[int, int] = {}
    out = []
    for x in items:
        counts[x % 5] = counts.get(x % 5, 0) + 1
        out.append((x % 5) * 1000 + counts[x % 5])
    return out, counts


@st.composite
def pipelines(
    draw: st.DrawFn,
) -> tuple[LocalEnvironment, list[tuple[str, list[int]]], dict[str, dict[int, int]]]:
    env = LocalEnvironment(
        "prop",
        chaining=draw(st.booleans()),
        queue_capacity=draw(st.integers(1, 64)),
        buffer_size=draw(st.integers(1, 64)),
        max_packets=draw(st.integers(1, 16)),
        trace_every=draw(st.sampled_from([0, 1, 7])),
    )
    par = st.integers(1, 4)
    streams: list[tuple[DataStream, list[int]]] = []
    for _ in range(draw(st.integers(1, 2))):
        items = draw(st.lists(st.integers(0, 50), max_size=40))
        streams.append((env.from_collection(items, parallelism=draw(par)), items))
    states: dict[str, dict[int, int]] = {}
    for step in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(streams) - 1))
        s, ref = streams[i]
        kind = draw(
            st.sampled_from(
                [
                    "map",
                    "filter",
                    "flat_map",
                    "counter",
                    "union",
                    "join",
                    "co_map",
                    "route",
                ]
            )
        )
        p = draw(par)
        if kind == "map":
            s, ref = (
                s.map(lambda x: (3 * x + 1) % M, parallelism=p),
                [(3 * x + 1) % M for x in ref],
            )
        elif kind == "filter":
            s, ref = (
                s.filter(lambda x: x % 3 != 0, parallelism=p),
                [x for x in ref if x % 3],
            )
        elif kind == "flat_map":
            s = s.flat_map(lambda x: [x, x + 1] if x % 2 else [], parallelism=p)
            ref = [y for x in ref for y in ([x, x + 1] if x % 2 else [])]
        elif kind == "counter":
            name = f"counter{step}"
            s = s.key_by(lambda x: x % 5).map(KeyedCounter, parallelism=p, name=name)
            ref, states[name] = _reference_counter(ref)
        elif kind == "route":
            router = draw(st.sampled_from(["round-robin", "least-queue", "broadcast"]))
            s = s.route(router).map(lambda x: x, parallelism=p)
            ref = ref * (p if router == "broadcast" else 1)
        elif len(streams) > 1:
            j = draw(st.sampled_from([k for k in range(len(streams)) if k != i]))
            other, oref = streams[j]
            if kind == "union":
                s, ref = s.union(other), ref + oref
            elif kind == "co_map":
                s = s.connect(other).co_map(
                    lambda x: x, lambda y: -y - 1, parallelism=p
                )
                ref = ref + [-y - 1 for y in oref]
            else:
                s = s.key_by(lambda x: x % 4).join(
                    other.key_by(lambda y: y % 4), lambda a, b: a * M + b, parallelism=p
                )
                ref = [a * M + b for a in ref for b in oref if a % 4 == b % 4]
        streams[i] = (s, ref)
    sinks = []
    for n, (s, ref) in enumerate(streams):
        sink = s.sink("collect", parallelism=draw(par), name=f"sink{n}")
        sinks.append((sink.name, ref))
    return env, sinks, states


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=pipelines())
def test_random_dags_match_the_reference(case: Any) -> None:
    env, sinks, states = case
    result = env.execute(timeout=60)
    for name, ref in sinks:
        assert Multiset(result.collected(name)) == Multiset(ref), name
    for name, expected in states.items():
        merged: dict[int, int] = {}
        for part in result.state_of(name):
            assert not set(part) & set(merged)  # one key lives on one replica
            merged.update(part)
        assert merged == expected, name


class OrderCheck(MapFunction):
    contract = Contract(state="stateful")

    def map(self, item: tuple[str, int]) -> tuple[str, int]:
        return item


@settings(max_examples=20, deadline=None)
@given(
    n_keys=st.integers(1, 8),
    n=st.integers(0, 300),
    p=st.integers(1, 4),
    cap=st.integers(1, 64),
    buffer=st.integers(1, 32),
    chaining=st.booleans(),
)
def test_key_by_keeps_per_key_order(
    n_keys: int, n: int, p: int, cap: int, buffer: int, chaining: bool
) -> None:
    items = [(f"k{i % n_keys}", i) for i in range(n)]
    env = LocalEnvironment(
        "order", queue_capacity=cap, buffer_size=buffer, chaining=chaining
    )
    s = env.from_collection(items).map(lambda kv: kv)
    s.key_by(lambda kv: kv[0]).map(OrderCheck, parallelism=p).sink("collect")
    got = env.execute(timeout=60).collected()
    assert sorted(got, key=lambda kv: kv[1]) == items
    per_key: dict[str, list[int]] = {}
    for key, seq in got:
        per_key.setdefault(key, []).append(seq)
    assert all(seqs == sorted(seqs) for seqs in per_key.values())


def test_backpressure_bounds_queues_and_items_in_flight() -> None:
    produced = 0
    lock = threading.Lock()
    in_flight_max = 0
    payload = "p" * 10_000

    def fast() -> Any:
        nonlocal produced
        for i in range(400):
            with lock:
                produced += 1
            yield {"i": i, "payload": payload}

    class Sleepy(SinkFunction):
        def __init__(self) -> None:
            super().__init__()
            self.seen = 0

        def sink(self, item: dict[str, Any]) -> None:
            nonlocal in_flight_max
            time.sleep(0.001)
            self.seen += 1
            with lock:
                in_flight_max = max(in_flight_max, produced - self.seen)

        def result(self) -> int:
            return self.seen

    cap, buffer = 4, 2
    env = LocalEnvironment("bp", queue_capacity=cap, buffer_size=buffer, chaining=False)
    env.from_source(fast).map(lambda d: d).sink(Sleepy)
    job = env.submit()
    depths = []
    while not job.done():
        for snap in job.metrics()["replicas"].values():
            if "queue" in snap:
                depths.append(snap["queue"]["depth"])
        time.sleep(0.005)
    result = job.wait(timeout=60)
    assert result.results["Sleepy"] == [400]  # every item arrived
    assert depths and max(depths) <= cap
    for snap in result.metrics["replicas"].values():
        if "queue" in snap:
            assert snap["queue"]["high_watermark"] <= cap
    # two queues of `cap` packets of `buffer` items, plus one batch held by each of
    # the three replicas: the source cannot run ahead of the sink by more
    bound = 2 * cap * buffer + 3 * buffer * 16
    assert in_flight_max <= bound
    assert result.metrics["replicas"]["Sleepy#0"]["items_in"] == 400
    assert result.metrics["operators"]["map"]["blocked_s"] > 0
