"""Request routers: invariants over random loads and health (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core.llm.plane import make_router
from sage_core.routing import Candidate, NoCandidateError, RouteRequest

ROUTERS = ["least-load", "power-of-two", "session-affinity", "prefix-hash"]

candidates_st = st.lists(
    st.tuples(st.integers(0, 20), st.integers(0, 5000), st.booleans()),
    min_size=1,
    max_size=8,
).map(
    lambda rows: [
        Candidate(i, f"engine-{i}", load=load, tokens=tokens, healthy=healthy)
        for i, (load, tokens, healthy) in enumerate(rows)
    ]
)
request_st = st.builds(
    RouteRequest,
    key=st.one_of(st.none(), st.text(max_size=8)),
    prefix=st.one_of(st.none(), st.text(max_size=300)),
    headers=st.dictionaries(
        st.just("x-session-id"), st.text(min_size=1, max_size=8), max_size=1
    ),
)


@pytest.mark.parametrize("name", ROUTERS)
@given(candidates=candidates_st, request=request_st)
@settings(max_examples=80, deadline=None)
def test_routers_choose_one_healthy_candidate(name, candidates, request) -> None:
    router = make_router(name)
    if not any(c.healthy for c in candidates):
        with pytest.raises(NoCandidateError):
            router.route(request, candidates)
        return
    chosen = router.route(request, candidates)
    assert len(chosen) == 1
    assert candidates[chosen[0]].healthy


@given(candidates=candidates_st)
@settings(max_examples=80, deadline=None)
def test_least_load_picks_the_minimum(candidates) -> None:
    healthy = [c for c in candidates if c.healthy]
    if not healthy:
        return
    chosen = candidates[make_router("least-load").route(RouteRequest(), candidates)[0]]
    assert (chosen.load, chosen.tokens) == min((c.load, c.tokens) for c in healthy)


@given(candidates=candidates_st, seed=st.integers(0, 1000))
@settings(max_examples=80, deadline=None)
def test_power_of_two_never_picks_the_most_loaded_of_several(candidates, seed) -> None:
    healthy = [c for c in candidates if c.healthy]
    if len(healthy) < 2:
        return
    router = make_router("power-of-two", {"seed": seed})
    chosen = candidates[router.route(RouteRequest(), candidates)[0]]
    loads = sorted((c.load, c.tokens) for c in healthy)
    assert (chosen.load, chosen.tokens) <= loads[-2]


@given(
    candidates=candidates_st,
    prefix=st.text(min_size=1, max_size=400),
    bound=st.integers(0, 6),
)
@settings(max_examples=150, deadline=None)
def test_prefix_hash_stays_within_its_bound(candidates, prefix, bound) -> None:
    healthy = [c for c in candidates if c.healthy]
    if not healthy:
        return
    router = make_router("prefix-hash", {"bound": bound})
    chosen = candidates[router.route(RouteRequest(prefix=prefix), candidates)[0]]
    assert chosen.load <= min(c.load for c in healthy) + bound


def test_prefix_hash_keeps_a_prefix_on_one_engine_until_it_is_loaded() -> None:
    router = make_router("prefix-hash", {"bound": 2, "prefix_chars": 16})
    idle = [Candidate(i, f"e{i}") for i in range(4)]
    request = RouteRequest(prefix="You are a helpful assistant. Question 1")
    home = router.route(request, idle)[0]
    again = RouteRequest(prefix="You are a helpful assistant. Question 2")
    assert router.route(again, idle)[0] == home  # same first 16 characters
    hot = [Candidate(i, f"e{i}", load=3 if i == home else 0) for i in range(4)]
    assert router.route(request, hot)[0] != home  # over the bound: spills over


@given(
    keys=st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=30),
    size=st.integers(2, 6),
    gone=st.data(),
)
@settings(max_examples=60, deadline=None)
def test_session_affinity_is_sticky_and_consistent(keys, size, gone) -> None:
    router = make_router("session-affinity")
    engines = [Candidate(i, f"engine-{i}") for i in range(size)]

    def place(cands: list[Candidate], key: str) -> str:
        req = RouteRequest(headers={"x-session-id": key})
        return cands[router.route(req, cands)[0]].name

    first = {k: place(engines, k) for k in keys}
    assert first == {k: place(engines, k) for k in keys}  # sticky
    lost = gone.draw(st.integers(0, size - 1))
    remaining = [
        Candidate(i, c.name)
        for i, c in enumerate(e for e in engines if e.index != lost)
    ]
    for key, name in first.items():
        if name != f"engine-{lost}":
            assert place(remaining, key) == name  # only the lost engine's keys move


def test_round_robin_is_shared_with_the_dataflow_when_installed() -> None:
    from sage_core import plugins

    if "round-robin" not in plugins.registry("router"):
        pytest.skip("the dataflow's round-robin router is not installed")
    router = make_router("round-robin")
    cands = [Candidate(i, f"e{i}", healthy=i != 1) for i in range(3)]
    picks = [router.route(RouteRequest(), cands)[0] for _ in range(6)]
    assert 1 not in picks and set(picks) == {0, 2}
