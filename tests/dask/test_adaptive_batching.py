"""Adaptive batching: a source packet fills for as long as its downstream's pressure
allows (``linger_for``), never past that at a steady pace, and loses or reorders
nothing however the pressure and the source's pace change."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_core import Contract, MapFunction
from sage_core.api.dask_environment import DaskEnvironment
from sage_core.compiler.plan import PlanFormatError, RuntimeSettings
from sage_core.runtime import source
from sage_core.runtime.source import BACKLOG, BUSY, IDLE, fill, linger_for


class CoreDouble:
    """Test double of the few ``ReplicaCore`` fields ``fill`` reads."""

    def __init__(
        self, buffer_size: int, linger_s: float, target_s: float, pressures: list[int]
    ) -> None:
        self.buffer_size, self.linger_s = buffer_size, linger_s
        self.latency_target_s = target_s
        self.source_pace = 0.0
        self._pressures = iter(pressures)
        self.seen: list[int] = []

    def pressure(self) -> int:
        p = next(self._pressures, IDLE)
        self.seen.append(p)
        return p


class VirtualClock:
    """Test double of ``perf_counter``: time moves only when the source yields."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def paced(self, gaps: list[float]) -> Iterator[tuple[int, float]]:
        """Item i arrives ``gaps[i]`` after item i-1; yields (i, arrival time)."""
        for i, gap in enumerate(gaps):
            self.now += gap
            yield i, self.now


def packets(
    core: CoreDouble, clock: VirtualClock, gaps: list[float]
) -> list[list[Any]]:
    """Every packet ``fill`` makes of a source with these gaps, on the clock."""
    out = []
    it = clock.paced(gaps)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(source, "_perf", clock)
        while batch := fill(core, it):  # type: ignore[arg-type]
            out.append(batch)
    return out


pressures = st.lists(st.sampled_from([IDLE, BUSY, BACKLOG]), max_size=400)


@settings(max_examples=200, deadline=None)
@given(
    gap_us=st.integers(0, 3000),
    n=st.integers(0, 300),
    size=st.integers(1, 64),
    linger_us=st.integers(0, 3000),
    target_us=st.integers(500, 20_000),
    levels=pressures,
)
def test_a_steady_source_never_outwaits_the_linger(
    gap_us: int,
    n: int,
    size: int,
    linger_us: int,
    target_us: int,
    levels: list[int],
) -> None:
    core = CoreDouble(size, linger_us * 1e-6, target_us * 1e-6, levels)
    got = packets(core, VirtualClock(), [gap_us * 1e-6] * n)
    assert [i for p in got for i, _ in p] == list(range(n))
    for p, level in zip(got, core.seen, strict=False):
        assert len(p) <= size
        # the last item came no later than the linger allowed after the first
        span = p[-1][1] - p[0][1]
        assert span <= linger_for(core, level) + 1e-12  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    gaps_us=st.lists(st.integers(0, 5000), max_size=300),
    size=st.integers(1, 64),
    linger_us=st.integers(0, 3000),
    levels=pressures,
)
def test_any_pace_and_pressure_keep_every_item_in_order(
    gaps_us: list[int],
    size: int,
    linger_us: int,
    levels: list[int],
) -> None:
    core = CoreDouble(size, linger_us * 1e-6, 5e-3, levels)
    got = packets(core, VirtualClock(), [g * 1e-6 for g in gaps_us])
    assert [i for p in got for i, _ in p] == list(range(len(gaps_us)))
    assert all(1 <= len(p) <= size for p in got)


@settings(max_examples=100, deadline=None)
@given(
    period_us=st.integers(500, 5000),
    late=st.integers(1, 20),
    stall_us=st.integers(0, 20_000),
    linger_us=st.integers(100, 3000),
)
def test_a_paced_source_that_fell_behind_overshoots_by_one_period_at_most(
    period_us: int, late: int, stall_us: int, linger_us: int
) -> None:
    """After a stall, a paced source yields its late items at once and then one per
    period again; the packet holding the late items must not wait periods for more
    (chunks doubling on the late items' speed did: 1 + 2 + 4 items, 12 ms at 2 ms)."""
    period = period_us * 1e-6
    steady = [period] * 40
    gaps = [*steady, stall_us * 1e-6, *([0.0] * late), *steady]
    core = CoreDouble(1024, linger_us * 1e-6, 100e-3, [BUSY] * 400)
    got = packets(core, VirtualClock(), gaps)
    assert [i for p in got for i, _ in p] == list(range(len(gaps)))
    for p in got:  # one pull may block past the deadline, never a chunk of them
        times = [t for _, t in p]
        longest = max((b - a for a, b in pairwise(times)), default=0.0)
        assert times[-1] - times[0] <= core.linger_s + longest + 1e-9


def test_packets_grow_with_the_downstream_pressure() -> None:
    core = CoreDouble(1024, 1e-3, 10e-3, [IDLE, BUSY, BACKLOG])
    got = packets(core, VirtualClock(), [10e-6] * 3000)  # 100k items/s
    sizes = [len(p) for p in got[:3]]
    assert sizes[0] < sizes[1] < sizes[2]


@pytest.mark.parametrize("name", ["latency_target_ms", "metrics_interval_s"])
def test_latency_settings_are_checked(name: str) -> None:
    assert getattr(RuntimeSettings(), name) > 0
    for bad in (0, -1.0, float("nan"), "5", True):
        with pytest.raises(PlanFormatError, match=name):
            RuntimeSettings.from_mapping({name: bad})


class KeyOrderCheck(MapFunction):
    """Counts items that arrive before an earlier item of their key."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[int, int] = {}
        self.out_of_order = 0

    def map(self, item: tuple[int, int]) -> tuple[int, int]:
        key, i = item
        if self.last.get(key, -1) > i:
            self.out_of_order += 1
        self.last[key] = i
        return item

    def get_state(self) -> dict[str, int]:
        return {"out_of_order": self.out_of_order}


def bursty(pauses: list[int]) -> Iterator[tuple[int, int]]:
    """Items in bursts with pauses (ms) between them, so the pressure keeps
    changing while the job runs."""
    i = 0
    for pause in pauses:
        for _ in range(50):
            yield (i % 5, i)
            i += 1
        time.sleep(pause / 1000)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    pauses=st.lists(st.integers(0, 3), min_size=1, max_size=20),
    buffer_size=st.integers(1, 64),
    linger_ms=st.sampled_from([0.0, 0.2, 1.0, 3.0]),
    target_ms=st.sampled_from([0.5, 5.0, 50.0]),
)
def test_adaptive_packets_keep_per_key_order_across_workers(
    embedded: Any,
    pauses: list[int],
    buffer_size: int,
    linger_ms: float,
    target_ms: float,
) -> None:
    env = DaskEnvironment(
        "adaptive",
        client=embedded,
        policy="round-robin",
        chaining=False,
        buffer_size=buffer_size,
        linger_ms=linger_ms,
        latency_target_ms=target_ms,
        queue_capacity=4,
    )
    s = env.from_source(bursty, pauses=pauses).key_by(lambda kv: kv[0])
    s.map(KeyOrderCheck, parallelism=2, name="order").sink("collect")
    got = env.submit().wait(timeout=120)
    assert sum(st["out_of_order"] for st in got.state_of("order")) == 0
    assert sorted(got.collected(), key=lambda kv: kv[1]) == list(bursty(pauses))


def waiting_source(n: int) -> Iterator[int]:
    """A source that waits (off the CPU) between items, as a paced or network
    source does."""
    for i in range(n):
        time.sleep(0.002)
        yield i


def test_a_source_that_waits_leaves_the_event_loop_to_the_others(embedded: Any) -> None:
    """Its steps move to the replica's own thread after a few waiting ones: while it
    sleeps on the worker's event loop, the other replicas there get no packets."""
    env = DaskEnvironment(
        "waits", client=embedded, policy="round-robin", chaining=False, linger_ms=3.0
    )
    env.from_source(waiting_source, n=200).map(lambda x: x + 1).sink("collect")
    got = env.submit().wait(timeout=120)
    assert sorted(got.collected()) == list(range(1, 201))
    offloaded = {m["task"]: m["offloaded"] for m in got.metrics["replicas"].values()}
    assert offloaded["waiting_source"] is True
    assert offloaded["map"] is False  # cheap CPU steps stay on the loop


def blocking_call(item: int) -> dict[str, Any]:
    """An operator that waits on the network, as an LLM or agent call does."""
    start = time.time()
    time.sleep(0.3)
    return {"item": item, "start": start, "end": time.time()}


def test_first_steps_that_block_run_side_by_side_on_one_worker(embedded: Any) -> None:
    """A replica's first steps run in its own thread: the first item of each replica
    of a blocking operator does not wait for its neighbours' on the worker's loop."""
    env = DaskEnvironment(
        "blocks", client=embedded, policy="load-aware-pack", buffer_size=1
    )
    env.from_collection(list(range(4))).map(
        blocking_call, parallelism=4, name="call"
    ).sink("collect")
    got = env.submit().wait(timeout=120)
    spans = sorted((x["start"], x["end"]) for x in got.collected())
    assert len(spans) == 4
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most >= 2, f"no two blocking calls overlapped: {spans}"


def numbers(n: int) -> Iterator[int]:
    yield from range(n)


def slow_double(item: int) -> int:
    time.sleep(0.002)  # twice the default linger
    return 2 * item


def run_slow(runtime: str, client: Any, op: Any, n: int) -> dict[str, Any]:
    """``op`` doubling n one-item packets on the local or Dask runtime; its
    replica's metrics (every item checked)."""
    from sage_core import LocalEnvironment

    kw: dict[str, Any] = {"buffer_size": 1, "chaining": False, "queue_capacity": 64}
    if runtime == "local":
        env: Any = LocalEnvironment("slow", **kw)
    else:
        env = DaskEnvironment("slow", client=client, **kw)
    env.from_source(numbers, n=n).map(op, name="slow").sink("collect")
    got = env.submit().wait(timeout=120)
    assert sorted(got.collected()) == [2 * i for i in range(n)]
    return next(m for m in got.metrics["replicas"].values() if m["task"] == "slow")


@pytest.mark.parametrize("runtime", ["local", "dask"])
def test_a_slow_operator_takes_one_packet_a_step(runtime: str, embedded: Any) -> None:
    """A step's outputs leave after its last packet: an operator whose packets
    each take longer than the linger processes them one a step, so its first item
    does not wait for the service of the packets queued behind it."""
    slow = run_slow(runtime, embedded, slow_double, 30)
    assert slow["packets_in"] >= 30
    assert slow["batches"] == 30


class SlowBatchDouble(MapFunction):
    """A batching operator: 2 ms a call, whatever the batch (as a model call)."""

    contract = Contract(batch_size=8)

    def map_batch(self, items: list[int]) -> list[int]:
        time.sleep(0.002)
        return [2 * x for x in items]


@pytest.mark.parametrize("runtime", ["local", "dask"])
def test_a_slow_batching_operator_still_batches_queued_packets(
    runtime: str, embedded: Any
) -> None:
    """Its steps take packets enough to fill its batch (one item a packet here), so
    slow calls do not shrink its batches to a packet each."""
    slow = run_slow(runtime, embedded, SlowBatchDouble, 64)
    assert slow["batches"] <= 32  # a step per packet would make 64


def spin_ms(ms: float) -> Any:
    """A map that computes (on the CPU, holding the GIL) for ``ms`` per item."""

    def spin(x: int) -> int:
        end = time.thread_time() + ms / 1000.0
        while time.thread_time() < end:
            pass
        return x

    return spin


def test_steps_move_off_the_loop_by_the_cpu_they_use(embedded: Any) -> None:
    """A step of a few milliseconds of CPU stays on the event loop (a thread would
    cost each step a hand-off and give the loop nothing: the GIL lets it in every
    5 ms either way); one of several switch intervals moves to the replica's own
    thread, so the loop gets in between its intervals. One job each: the
    in-process cluster's workers share one GIL."""
    from sage_core.runtime.dask_actor import OFFLOAD_CPU_S

    def offloaded(ms: float) -> bool:
        env = DaskEnvironment(
            "cpu-steps",
            client=embedded,
            policy="round-robin",
            chaining=False,
            buffer_size=1,
        )
        env.from_source(numbers, n=30).map(spin_ms(ms), name="op").sink("collect")
        got = env.submit().wait(timeout=120)
        assert sorted(got.collected()) == list(range(30))
        moved = {m["task"]: m["offloaded"] for m in got.metrics["replicas"].values()}
        return bool(moved["op"])

    assert not offloaded(0.4 * OFFLOAD_CPU_S * 1000)
    assert offloaded(2 * OFFLOAD_CPU_S * 1000)
