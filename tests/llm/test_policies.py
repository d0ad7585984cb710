"""Request policies: ordering invariants under random arrivals (hypothesis); the
interference-aware policy's pacing and learned batch sizes; the engine-signal
routers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core.llm.classify import LLMRequest
from sage_core.llm.errors import ConfigError
from sage_core.llm.plane import make_policy, make_router
from sage_core.llm.scheduling import RequestPolicy
from sage_core.llm.signals import parse_vllm_metrics
from sage_core.routing import Candidate, RouteRequest
from schedulers.interference import BatchCost


@dataclass
class FixedView:
    """A DispatchView where the listed pools always have a free slot."""

    ready_pools: set[str] = field(default_factory=lambda: {"llm:m", "embedding:e"})
    inflight_by_pool: dict[str, int] = field(default_factory=dict)
    now: float = 1000.0
    apart: bool = True  # a free engine sits on a device without other-kind work

    def engines(self, pool: str) -> int:
        return 1

    def ready_apart(self, pool: str) -> bool:
        return self.apart and pool in self.ready_pools

    def ready(self, pool: str) -> bool:
        return pool in self.ready_pools

    def inflight(self, pool: str) -> int:
        return self.inflight_by_pool.get(pool, 0)

    def inflight_kind(self, engine_kind: str) -> int:
        return sum(
            n for p, n in self.inflight_by_pool.items() if p.startswith(engine_kind)
        )


requests_st = st.lists(
    st.tuples(
        st.sampled_from(["chat", "completion", "embedding"]),
        st.integers(0, 9),  # priority
        st.one_of(st.none(), st.floats(1, 10_000)),  # slo ms
        st.integers(1, 5),  # inputs
    ),
    max_size=40,
)


def build(specs: list[tuple[str, int, float | None, int]]) -> list[LLMRequest]:
    out = []
    for seq, (kind, priority, slo, size) in enumerate(specs, start=1):
        model = "e" if kind == "embedding" else "m"
        body = {"model": model, "input": ["x"] * size} if kind == "embedding" else {}
        arrival = 100.0 + seq * 0.001
        out.append(
            LLMRequest(
                kind=kind,
                model=model,
                body=body,
                priority=priority,
                slo_ms=slo,
                arrival=arrival,
                deadline=arrival + slo / 1000 if slo else math.inf,
                size=size if kind == "embedding" else 1,
                seq=seq,
            )
        )
    return out


def drain(policy: RequestPolicy, view: FixedView) -> list[list[LLMRequest]]:
    batches = []
    while (batch := policy.pop(view)) is not None:
        batches.append(batch)
    return batches


ALL = [
    "fifo",
    "priority",
    "slo-aware",
    "hybrid",
    "interference-aware",
    "cost-optimized",
    "adaptive",
]


@pytest.mark.parametrize("name", ALL)
@given(specs=requests_st)
@settings(max_examples=60, deadline=None)
def test_every_request_leaves_exactly_once(name: str, specs: list) -> None:
    policy = make_policy(name)
    requests = build(specs)
    for r in requests:
        policy.push(r)
    assert len(policy) == len(requests)
    assert policy.requests() == requests
    out = [r for batch in drain(policy, FixedView()) for r in batch]
    assert sorted(r.seq for r in out) == [r.seq for r in requests]
    assert len(policy) == 0


@pytest.mark.parametrize("name", ALL)
@given(specs=requests_st, data=st.data())
@settings(max_examples=40, deadline=None)
def test_removed_requests_never_come_out(name: str, specs: list, data) -> None:
    policy = make_policy(name)
    requests = build(specs)
    for r in requests:
        policy.push(r)
    gone = data.draw(st.sets(st.sampled_from(requests))) if requests else set()
    for r in gone:
        assert policy.remove(r)
        assert not policy.remove(r)
    assert len(policy) == len(requests) - len(gone)
    out = {r.seq for batch in drain(policy, FixedView()) for r in batch}
    assert out == {r.seq for r in requests} - {r.seq for r in gone}


@given(specs=requests_st)
@settings(max_examples=60, deadline=None)
def test_fifo_serves_in_arrival_order(specs: list) -> None:
    policy = make_policy("fifo")
    for r in build(specs):
        policy.push(r)
    seqs = [b[0].seq for b in drain(policy, FixedView())]
    assert seqs == sorted(seqs)


@given(specs=requests_st)
@settings(max_examples=60, deadline=None)
def test_priority_serves_higher_first_then_arrival(specs: list) -> None:
    policy = make_policy("priority")
    for r in build(specs):
        policy.push(r)
    keys = [(-b[0].priority, b[0].seq) for b in drain(policy, FixedView())]
    assert keys == sorted(keys)


@given(specs=requests_st)
@settings(max_examples=60, deadline=None)
def test_slo_aware_is_earliest_deadline_first(specs: list) -> None:
    policy = make_policy("slo-aware", {"default_slo_ms": 5000})
    for r in build(specs):
        policy.push(r)
    # now is before every deadline: nothing is late, pure EDF
    view = FixedView(now=0.0)
    keys = [policy.key(b[0]) for b in drain(policy, view)]
    assert keys == sorted(keys)


def test_slo_aware_serves_late_requests_after_on_time_ones() -> None:
    policy = make_policy("slo-aware")
    late, on_time = build([("chat", 1, 10.0, 1), ("chat", 1, 5000.0, 1)])
    policy.push(late)
    policy.push(on_time)
    view = FixedView(now=late.deadline + 0.5)
    assert [b[0] for b in drain(policy, view)] == [on_time, late]


def test_priority_waits_for_a_ready_pool() -> None:
    policy = make_policy("priority")
    emb, chat = build([("embedding", 9, None, 1), ("chat", 0, None, 1)])
    policy.push(emb)
    policy.push(chat)
    view = FixedView(ready_pools={"llm:m"})
    assert policy.pop(view) == [chat]
    assert policy.pop(view) is None


@given(specs=requests_st, max_batch=st.integers(1, 8))
@settings(max_examples=60, deadline=None)
def test_hybrid_batches_respect_the_size_bound(specs: list, max_batch: int) -> None:
    policy = make_policy("hybrid", {"max_batch": max_batch, "max_wait_ms": 0})
    for r in build(specs):
        policy.push(r)
    for batch in drain(policy, FixedView()):
        if batch[0].kind == "embedding":
            assert all(r.kind == "embedding" for r in batch)
            assert len(batch) == 1 or sum(r.size for r in batch) <= max_batch
            assert [r.seq for r in batch] == sorted(r.seq for r in batch)
        else:
            assert len(batch) == 1


def test_hybrid_holds_embeddings_until_batch_full_or_wait_over() -> None:
    policy = make_policy("hybrid", {"max_batch": 4, "max_wait_ms": 50})
    reqs = build([("embedding", 1, None, 1)] * 3)
    for r in reqs:
        policy.push(r)
    busy = FixedView(inflight_by_pool={"embedding:e": 1}, now=reqs[0].arrival)
    assert policy.pop(busy) is None  # engine busy, batch not full, wait not over
    assert policy.wake_after(busy.now) == pytest.approx(0.05)
    busy.now = reqs[0].arrival + 0.06
    assert policy.pop(busy) == reqs  # wait bound reached: one batch of three
    more = build([("embedding", 1, None, 1)] * 2)
    for r in more:
        policy.push(r)
    idle = FixedView(now=more[0].arrival)
    assert policy.pop(idle) == more  # idle engine: no waiting


def test_hybrid_serves_embedding_batches_before_llm_requests() -> None:
    policy = make_policy("hybrid", {"max_wait_ms": 0})
    chat, emb = build([("chat", 9, 100.0, 1), ("embedding", 0, None, 1)])
    policy.push(chat)
    policy.push(emb)
    view = FixedView(now=0.0)
    assert [b[0] for b in drain(policy, view)] == [emb, chat]


def test_hybrid_caps_llm_in_flight_while_embeddings_wait() -> None:
    policy = make_policy("hybrid", {"llm_cap_when_mixed": 1, "max_wait_ms": 1000})
    chat, emb = build([("chat", 1, None, 1), ("embedding", 1, None, 1)])
    policy.push(chat)
    policy.push(emb)
    view = FixedView(
        ready_pools={"llm:m"}, inflight_by_pool={"llm:m": 1, "embedding:e": 1}
    )
    assert policy.pop(view) is None  # embedding work pending: no second LLM request
    view.inflight_by_pool = {"llm:m": 0, "embedding:e": 1}
    assert policy.pop(view) == [chat]


@pytest.mark.parametrize(
    ("name", "config"),
    [("hybrid", {"max_batch": 0}), ("slo-aware", {"default_slo_ms": "soon"})],
)
def test_bad_policy_config_is_a_named_error(name: str, config: dict) -> None:
    from sage_core.llm.errors import ConfigError

    with pytest.raises(ConfigError, match=name):
        make_policy(name, config)


def test_unknown_policy_suggests_names() -> None:
    from sage_core.common.errors import UnknownPluginError

    with pytest.raises(UnknownPluginError, match="slo-aware"):
        make_policy("slo_aware")


ops_st = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.sampled_from(["completion", "embedding"]),
            st.integers(0, 9),
            st.one_of(st.none(), st.floats(50, 5000)),
            st.integers(1, 600),  # estimated tokens
        ),
        st.tuples(st.just("pop"), st.booleans(), st.booleans(), st.floats(0, 0.3)),
        st.tuples(st.just("remove"), st.integers(0, 1000)),
    ),
    max_size=60,
)


@given(ops=ops_st)
@settings(max_examples=80, deadline=None)
def test_no_request_is_lost_or_served_twice(ops: list) -> None:
    policy = make_policy("interference-aware", {"max_wait_ms": 5, "hold_max_ms": 100})
    view = FixedView()
    pushed: list[LLMRequest] = []
    removed: set[int] = set()
    served: list[int] = []
    for op in ops:
        if op[0] == "push":
            _, kind, priority, slo, tokens = op
            (request,) = build([(kind, priority, slo, 1)])
            request.seq = len(pushed) + 1
            request.arrival = view.now
            request.deadline = view.now + slo / 1000 if slo else math.inf
            request.tokens = tokens
            pushed.append(request)
            policy.push(request)
        elif op[0] == "pop":
            _, apart, emb_busy, advance = op
            view.now += advance
            view.apart = apart
            view.inflight_by_pool = {"embedding:e": 1} if emb_busy else {}
            if batch := policy.pop(view):
                served.extend(r.seq for r in batch)
        elif pushed:
            request = pushed[op[1] % len(pushed)]
            if policy.remove(request):
                removed.add(request.seq)
    view.now += 10.0  # every hold and batch wait is over
    view.inflight_by_pool = {}
    served.extend(r.seq for batch in drain(policy, view) for r in batch)
    assert len(served) == len(set(served)), "a request was served twice"
    assert not set(served) & removed, "a removed request was served"
    assert set(served) | removed == {r.seq for r in pushed}, "a request was lost"
    assert len(policy) == 0


def _llm(seq: int, tokens: int, now: float) -> LLMRequest:
    return LLMRequest(
        kind="completion", model="m", body={}, arrival=now, tokens=tokens, seq=seq
    )


def test_heavy_prefills_are_paced_while_embeddings_share_the_device() -> None:
    policy = make_policy(
        "interference-aware", {"pace_ms": 50, "hold_max_ms": 1000, "slack_ms": 0}
    )
    view = FixedView(apart=False, inflight_by_pool={"embedding:e": 1}, now=10.0)
    for seq in (1, 2, 3):
        policy.push(_llm(seq, 2000, view.now))
    policy.push(_llm(4, 10, view.now))
    assert [r.seq for r in policy.pop(view) or []] == [1]
    assert policy.pop(view) is None  # the next heavy one waits for its pace
    wait = policy.wake_after(view.now)
    assert wait is not None and 0 < wait <= 0.05 + 1e-9
    view.now += 0.05
    assert [r.seq for r in policy.pop(view) or []] == [2]
    view.inflight_by_pool = {}  # no embedding work left: no pacing
    assert [r.seq for r in drain(policy, view)[0]] == [3]


def test_a_held_request_goes_when_its_deadline_is_near() -> None:
    policy = make_policy(
        "interference-aware", {"pace_ms": 1000, "hold_max_ms": 1000, "slack_ms": 500}
    )
    view = FixedView(apart=False, inflight_by_pool={"embedding:e": 1}, now=10.0)
    policy.push(_llm(1, 2000, view.now))
    urgent = _llm(2, 2000, view.now)
    urgent.deadline = view.now + 0.2  # within slack: LLM SLO pressure
    policy.push(urgent)
    served = [r.seq for b in drain(policy, view) for r in b]
    assert 2 in served


def test_batch_cost_fit_recovers_g_and_sizes_batches() -> None:
    cost = BatchCost()
    for n in (1, 4, 8, 16, 2, 32):
        cost.observe(n, 0.005 + 0.002 * n)
    fit = cost.fit()
    assert fit is not None
    assert fit[0] == pytest.approx(0.005, rel=1e-6)
    assert fit[1] == pytest.approx(0.002, rel=1e-6)
    policy = make_policy(
        "interference-aware",
        {"max_batch": 64, "max_wait_ms": 20, "batch_budget_ms": 45},
    )
    (request,) = build([("embedding", 1, None, 4)])
    policy.observe([request], 0.005 + 0.002 * 4)
    policy.observe([request] * 4, 0.005 + 0.002 * 16)
    learned = policy.describe()["learned"]
    assert learned["max_batch"] == 22  # 45 ms / 2 ms per input
    assert learned["max_wait_ms"] == pytest.approx(5.0)  # wait <= fixed cost


def test_kv_aware_router_reads_engine_metrics() -> None:
    text = (
        '# HELP x\nvllm:num_requests_waiting{model_name="a"} 3.0\n'
        'vllm:kv_cache_usage_perc{model_name="a"} 0.5\nother_metric 7\n'
    )
    signals = parse_vllm_metrics(text)
    assert signals == {"num_requests_waiting": 3.0, "gpu_cache_usage_perc": 0.5}
    router = make_router("kv-aware")
    candidates = [
        Candidate(0, "a", load=1, signals=signals),
        Candidate(1, "b", load=2, signals={"num_requests_waiting": 0.0}),
    ]
    assert router.route(RouteRequest(), candidates) == [1]
    assert router.route(RouteRequest(), candidates[:1]) == [0]


def test_interference_router_avoids_a_device_busy_with_the_other_kind() -> None:
    router = make_router("interference-aware")
    candidates = [
        Candidate(0, "a", load=1, signals={"colocated_inflight": 4}),
        Candidate(1, "b", load=3, signals={"colocated_inflight": 0}),
    ]
    assert router.route(RouteRequest(), candidates) == [1]


def test_device_packing_router_fills_the_busiest_llm_engine_up_to_its_limit() -> None:
    router = make_router("device-packing", {"pack_limit": 4})
    llm = RouteRequest(kind="llm")
    paired = {"colocated_engines": 1}

    def engines(*loads: int) -> list[Candidate]:
        return [
            Candidate(i, f"llm{i}", load=n, signals=paired) for i, n in enumerate(loads)
        ]

    assert router.route(llm, engines(0, 0, 0)) == [0]  # all idle: the first
    assert router.route(llm, engines(1, 3, 0)) == [1]  # the busiest with room
    assert router.route(llm, engines(4, 2, 0)) == [1]  # llm0 is at the limit
    assert router.route(llm, engines(4, 5, 6)) == [0]  # all full: the least loaded
    down = [
        Candidate(0, "a", load=3, healthy=False, signals=paired),
        Candidate(1, "b", load=1, signals=paired),
    ]
    assert router.route(llm, down) == [1]


def test_device_packing_router_is_least_load_where_no_device_is_shared() -> None:
    router = make_router("device-packing")
    for kind in ("llm", "embedding"):
        candidates = [Candidate(0, "a", load=3), Candidate(1, "b", load=1)]
        assert router.route(RouteRequest(kind=kind), candidates) == [1]


def test_device_packing_router_sends_embeddings_where_they_finish_first() -> None:
    router = make_router("device-packing")
    emb = RouteRequest(kind="embedding")

    def engines(beside_busy: int, beside_idle: int) -> list[Candidate]:
        busy = {"colocated_engines": 1, "colocated_inflight": 12}
        idle = {"colocated_engines": 1, "colocated_inflight": 0}
        return [
            Candidate(0, "emb0", load=beside_busy, signals=busy),
            Candidate(1, "emb1", load=beside_idle, signals=idle),
        ]

    # beside generations a batch runs at half speed: the idle device wins until
    # its queue is twice as long
    assert router.route(emb, engines(0, 0)) == [1]
    assert router.route(emb, engines(0, 1)) == [0]  # a tie: the shorter queue
    assert router.route(emb, engines(1, 2)) == [1]
    assert router.route(emb, engines(1, 4)) == [0]
    with pytest.raises(ConfigError, match="pack_limit must be >= 1"):
        make_router("device-packing", {"pack_limit": 0})
