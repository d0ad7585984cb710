"""Windows and interval joins as pipeline operators: DSL and YAML, local threads and a
real Dask LocalCluster."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

from sage_core import LocalEnvironment, StreamShapeError
from sage_core.graph import load_spec


def events(n: int, keys: int, disorder: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    xs = [{"k": f"k{i % keys}", "ts": i, "v": rng.randint(0, 9)} for i in range(n)]
    xs.sort(key=lambda x: x["ts"] + rng.randint(0, disorder))
    return xs  # no event closes the last windows: the end of the input does


def tumbling_sums(xs: list[dict[str, Any]], size: int) -> dict[tuple[str, int], int]:
    sums: dict[tuple[str, int], int] = defaultdict(int)
    for x in xs:
        sums[(x["k"], x["ts"] // size * size)] += x["v"]
    return dict(sums)


def by_window(results: list[dict[str, Any]]) -> dict[tuple[str, int], int]:
    return {(r["key"], r["window_start"]): r["value"] for r in results}


def test_keyed_tumbling_sum_on_parallel_replicas_matches_sorting_first() -> None:
    xs = events(400, keys=5, disorder=6)
    env = LocalEnvironment("windows")
    results, late = (
        env.from_collection(xs)
        .key_by("k")
        .window(size=10, max_lateness=6)
        .aggregate("sum", value_field="v", late="side", parallelism=2)
    )
    results.collect(name="sums")
    late.collect(name="late")
    result = env.execute(timeout=60)
    got = result.collected("sums")
    assert by_window(got) == tumbling_sums(xs, 10)
    assert all(r["window_end"] - r["window_start"] == 10 for r in got)
    assert result.collected("late") == []


def test_window_needs_a_keyed_stream() -> None:
    env = LocalEnvironment("unkeyed")
    with pytest.raises(StreamShapeError, match="key_by"):
        env.from_collection([1]).interval_join(
            env.from_collection([2]).key_by("k"), lower=0, upper=1
        )


SPEC = {
    "name": "clicks",
    "operators": [
        {"name": "views", "use": "collection", "config": {"items": []}},
        {"name": "clicks", "use": "collection", "config": {"items": []}},
        {
            "name": "per-user",
            "use": "window",
            "config": {
                "key": "k",
                "gap": 5,
                "max_lateness": 4,
                "aggregate": "count",
            },
            "inputs": [{"from": "views", "router": "key-hash", "key": "k"}],
        },
        {
            "name": "attributed",
            "use": "interval-join",
            "config": {
                "left_key": "k",
                "right_key": "k",
                "lower": 0,
                "upper": 3,
                "max_lateness": 4,
            },
            "inputs": [
                {"from": "views", "router": "key-hash", "key": "k"},
                {"from": "clicks", "router": "key-hash", "key": "k"},
            ],
        },
        {"name": "sessions", "use": "collect", "inputs": ["per-user"]},
        {"name": "pairs", "use": "collect", "inputs": ["attributed"]},
    ],
}


def test_yaml_spec_session_window_and_interval_join_on_a_dask_cluster(
    sage_home: Any,
) -> None:
    from sage_core import DaskEnvironment

    # one replica's watermark covers all its keys: the views come in time order,
    # give or take less than max_lateness
    views = [{"k": "u1", "ts": t} for t in (0, 2, 4, 20, 21)]
    views += [{"k": "u2", "ts": t} for t in (1, 30)]
    views.sort(key=lambda v: v["ts"] + (3 if v["ts"] == 1 else 0))
    clicks = [{"k": "u1", "ts": 3}, {"k": "u1", "ts": 22}, {"k": "u2", "ts": 9}]
    spec = {**SPEC, "operators": [dict(op) for op in SPEC["operators"]]}
    spec["operators"][0]["config"] = {"items": views}
    spec["operators"][1]["config"] = {"items": clicks}
    env = DaskEnvironment("clicks", n_workers=2)
    try:
        env.graph = load_spec(spec).graph
        result = env.execute(timeout=120)
    finally:
        env.close()
    sessions = {
        (r["key"], r["window_start"], r["window_end"]): r["value"]
        for r in result.collected("sessions")
    }
    assert sessions == {
        ("u1", 0, 9): 3,
        ("u1", 20, 26): 2,
        ("u2", 1, 6): 1,
        ("u2", 30, 35): 1,
    }
    pairs = sorted(
        (p["key"], p["left"]["ts"], p["right"]["ts"]) for p in result.collected("pairs")
    )
    assert pairs == [
        ("u1", 0, 3),
        ("u1", 2, 3),
        ("u1", 20, 22),
        ("u1", 21, 22),
    ]


def test_dsl_reduce_with_a_function_on_sliding_windows() -> None:
    xs = events(120, keys=2, disorder=3)
    env = LocalEnvironment("reduce")
    env.from_collection(xs).key_by("k").window(size=10, slide=5, max_lateness=3).reduce(
        max, value_field="v"
    ).collect(name="maxes")
    got = env.execute(timeout=60).collected("maxes")
    want: dict[tuple[str, int], int] = {}
    for x in xs:
        for start in (x["ts"] // 5 * 5, x["ts"] // 5 * 5 - 5):
            key = (x["k"], start)
            want[key] = max(want.get(key, x["v"]), x["v"])
    assert by_window(got) == want
