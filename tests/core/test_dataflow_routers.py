"""Dataflow routers: semantics, batch fast path versus route(), stable key hashing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import plugins
from sage_core.routing import Candidate, NoCandidateError, Router, RouteRequest


def make(name: str, **config: Any) -> Router:
    router = plugins.get("router", name)(**config)
    assert isinstance(router, Router)
    return router


def cands(
    n: int, down: frozenset[int] = frozenset(), loads: Any = None
) -> list[Candidate]:
    return [
        Candidate(i, f"r{i}", load=loads[i] if loads else 0.0, healthy=i not in down)
        for i in range(n)
    ]


def test_round_robin_is_registered_for_both_scopes_and_skips_unhealthy() -> None:
    assert plugins.resolve("router", "round-robin").meta["scope"] == "any"
    rr = make("round-robin")
    picks = [rr.route(RouteRequest(), cands(3, frozenset({1})))[0] for _ in range(6)]
    assert picks == [0, 2, 0, 2, 0, 2]
    with pytest.raises(NoCandidateError):
        rr.route(RouteRequest(), cands(2, frozenset({0, 1})))


def test_round_robin_batches_rotate_whole() -> None:
    rr = make("round-robin")
    parts = [rr.partition([1, 2, 3], None, cands(2)) for _ in range(3)]
    assert parts == [[[1, 2, 3], []], [[], [1, 2, 3]], [[1, 2, 3], []]]


def test_broadcast_and_least_queue() -> None:
    bc = make("broadcast")
    assert bc.partition(["a"], None, cands(3, frozenset({2}))) == [["a"], ["a"], []]
    lq = make("least-queue")
    assert lq.route(RouteRequest(), cands(3, loads=[5, 1, 3])) == [1]
    assert lq.partition(["x", "y"], None, cands(3, loads=[0, 4, 4])) == [
        ["x", "y"],
        [],
        [],
    ]


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(
        st.one_of(
            st.integers(), st.text(max_size=8), st.tuples(st.integers(), st.text())
        ),
        max_size=40,
    ),
    n=st.integers(1, 6),
)
def test_key_hash_partition_agrees_with_route(keys: list[Any], n: int) -> None:
    kh = make("key-hash")
    items = list(range(len(keys)))
    parts = kh.partition(items, keys, cands(n))
    for target, part in enumerate(parts):
        for i in part:
            assert kh.route(RouteRequest(key=keys[i]), cands(n)) == [target]
    assert sorted(i for part in parts for i in part) == items  # nothing lost, in order
    assert all(part == sorted(part) for part in parts)


@settings(max_examples=40, deadline=None)
@given(items=st.lists(st.integers(), max_size=30), n=st.integers(1, 5))
def test_default_partition_is_route_per_item(items: list[int], n: int) -> None:
    class Modulo(Router):
        keyed = True

        def route(self, request: RouteRequest, candidates: Any) -> list[int]:
            return [request.key % len(candidates)]

    parts = Modulo().partition(items, items, cands(n))
    assert parts == [[x for x in items if x % n == i] for i in range(n)]


def test_key_hash_is_stable_across_processes(tmp_path: Path) -> None:
    keys = ["user-1", 42, ("a", 1), 3.5, b"raw"]
    here = [make("key-hash").route(RouteRequest(key=k), cands(7))[0] for k in keys]
    code = (
        "from sage_core import plugins; from sage_core.routing import *;"
        f"keys={keys!r}; kh=plugins.get('router','key-hash')();"
        "c=[Candidate(i, str(i)) for i in range(7)];"
        "print([kh.route(RouteRequest(key=k), c)[0] for k in keys])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=tmp_path,  # keep the source tree off sys.path
        timeout=120,
    ).stdout
    assert out.strip() == str(here)


def test_key_hash_rejects_unhashable_keys_by_name() -> None:
    with pytest.raises(TypeError, match="no stable hash"):
        make("key-hash").route(RouteRequest(key=[1, 2]), cands(2))
