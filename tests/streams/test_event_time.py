"""Window and interval-join operators against a reference: find the late items by
replaying the watermark over arrival order, then sort the rest and window/join them."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_plugins.streams import IntervalJoin, StreamConfigError, Window


def late_flags(times: list[float], max_lateness: float) -> list[bool]:
    """Whether each arrival is below the watermark (max time so far - lateness)."""
    wm, flags = -math.inf, []
    for t in times:
        flags.append(t < wm)
        if t >= wm:
            wm = max(wm, t - max_lateness)
    return flags


def reference_windows(
    items: list[dict[str, Any]],
    *,
    size: float | None = None,
    slide: float | None = None,
    gap: float | None = None,
    max_lateness: float,
    agg: Any,
) -> tuple[set[tuple[Any, float, float, Any]], int]:
    """Window results of the on-time items as a set, and the number of late ones."""
    flags = late_flags([x["ts"] for x in items], max_lateness)
    kept = sorted(
        (x for x, late in zip(items, flags, strict=True) if not late),
        key=lambda x: x["ts"],
    )
    groups: dict[tuple[Any, float, float], list[Any]] = defaultdict(list)
    if gap is not None:
        by_key: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for x in kept:
            by_key[x["k"]].append(x)
        for k, xs in by_key.items():
            run = [xs[0]]
            for x in xs[1:]:
                if x["ts"] - run[-1]["ts"] < gap:
                    run.append(x)
                else:
                    groups[(k, run[0]["ts"], run[-1]["ts"] + gap)] = [
                        y["v"] for y in run
                    ]
                    run = [x]
            groups[(k, run[0]["ts"], run[-1]["ts"] + gap)] = [y["v"] for y in run]
    else:
        assert size is not None
        step = slide or size
        for x in kept:
            s = math.floor(x["ts"] / step) * step
            while s > x["ts"] - size:
                groups[(x["k"], s, s + size)].append(x["v"])
                s -= step
    results = {(k, s, e, agg(vs)) for (k, s, e), vs in groups.items()}
    return results, sum(flags)


def reference_join(
    arrivals: list[tuple[int, dict[str, Any]]],
    *,
    lower: float,
    upper: float,
    max_lateness: float,
) -> set[tuple[int, int]]:
    """``(left id, right id)`` of the on-time pairs that should join."""
    sides: list[list[dict[str, Any]]] = [[], []]
    for side in (0, 1):
        xs = [x for s, x in arrivals if s == side]
        flags = late_flags([x["ts"] for x in xs], max_lateness)
        sides[side] = [x for x, late in zip(xs, flags, strict=True) if not late]
    return {
        (left["id"], right["id"])
        for left in sides[0]
        for right in sides[1]
        if left["k"] == right["k"] and lower <= right["ts"] - left["ts"] <= upper
    }


# --- generated inputs ------------------------------------------------------------


@st.composite
def shuffled_events(draw: Any, max_shift: int) -> list[dict[str, Any]]:
    """Events in time order, then each moved back in arrival by up to ``max_shift``
    positions' worth of time (bounded out-of-orderness)."""
    n = draw(st.integers(1, 60))
    times = sorted(draw(st.lists(st.integers(0, 200), min_size=n, max_size=n)))
    jitter = draw(st.lists(st.integers(0, max_shift), min_size=n, max_size=n))
    keys = draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n))
    vals = draw(st.lists(st.integers(-50, 50), min_size=n, max_size=n))
    events = [
        {"id": i, "k": k, "ts": t, "v": v}
        for i, (t, k, v) in enumerate(zip(times, keys, vals, strict=True))
    ]
    order = sorted(range(n), key=lambda i: times[i] + jitter[i])
    return [events[i] for i in order]


def run_window(events: list[dict[str, Any]], batch: int, **config: Any) -> Window:
    op = Window(key="k", value_field="v", **config)
    op.outputs = []  # type: ignore[attr-defined]
    for i in range(0, len(events), batch):
        op.outputs.extend(op.flat_map_batch(events[i : i + batch]))  # type: ignore[attr-defined]
    op.outputs.extend(op.flush())  # type: ignore[attr-defined]
    return op


def as_set(results: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(r["key"], r["window_start"], r["window_end"], r["value"]) for r in results}


AGGS = {"sum": sum, "count": len, "min": min, "max": max}
SHAPES = [
    {"size": 10},
    {"size": 10, "slide": 5},
    {"size": 7, "slide": 3},
    {"gap": 6},
]


# --- windows ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("agg", sorted(AGGS))
@given(events=shuffled_events(max_shift=8), batch=st.integers(1, 7))
def test_out_of_order_within_lateness_equals_sorting_first(
    shape: dict[str, Any], agg: str, events: list[dict[str, Any]], batch: int
) -> None:
    op = run_window(events, batch, aggregate=agg, max_lateness=8, **shape)
    want, late = reference_windows(events, max_lateness=8, agg=AGGS[agg], **shape)
    assert late == 0 and op.late_items == 0
    assert as_set(op.outputs) == want  # type: ignore[attr-defined]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@given(events=shuffled_events(max_shift=30), lateness=st.integers(0, 10))
def test_items_later_than_max_lateness_are_counted_and_left_out(
    shape: dict[str, Any], events: list[dict[str, Any]], lateness: int
) -> None:
    op = run_window(events, 4, aggregate="sum", max_lateness=lateness, **shape)
    want, late = reference_windows(events, max_lateness=lateness, agg=sum, **shape)
    assert op.late_items == late
    assert as_set(op.outputs) == want  # type: ignore[attr-defined]


@given(events=shuffled_events(max_shift=30))
def test_late_items_go_to_the_side_output_not_lost(
    events: list[dict[str, Any]],
) -> None:
    op = run_window(events, 3, aggregate="count", max_lateness=2, size=10, late="side")
    late = [r for r in op.outputs if "late" in r]  # type: ignore[attr-defined]
    counted = sum(r["value"] for r in op.outputs if "late" not in r)  # type: ignore[attr-defined]
    assert len(late) == op.late_items
    assert counted + len(late) == len(events)
    assert all(r["late"]["ts"] < r["watermark"] for r in late)


@given(events=shuffled_events(max_shift=5), cut=st.integers(0, 60))
def test_state_snapshot_and_restore_continue_the_same_windows(
    events: list[dict[str, Any]], cut: int
) -> None:
    whole = run_window(events, 1, aggregate="mean", max_lateness=5, size=10, slide=5)
    first = Window(
        key="k", value_field="v", aggregate="mean", max_lateness=5, size=10, slide=5
    )
    out = first.flat_map_batch(events[:cut])
    second = Window(
        key="k", value_field="v", aggregate="mean", max_lateness=5, size=10, slide=5
    )
    second.restore_state(first.get_state())
    out += second.flat_map_batch(events[cut:]) + second.flush()
    assert as_set(out) == as_set(whole.outputs)  # type: ignore[attr-defined]


def test_tumbling_windows_cover_half_open_multiples_of_size() -> None:
    events = [{"k": "a", "ts": t, "v": 1} for t in (0, 9.99, 10, 19, 20)]
    op = run_window(events, 10, aggregate="count", size=10)
    got = [(r["window_start"], r["window_end"], r["value"]) for r in op.outputs]  # type: ignore[attr-defined]
    assert got == [(0, 10, 2), (10, 20, 2), (20, 30, 1)]


def test_windows_fire_once_the_watermark_passes_their_end() -> None:
    op = Window(key="k", value_field="v", aggregate="sum", size=10, max_lateness=5)
    assert (
        op.flat_map_batch([{"k": "a", "ts": 3, "v": 1}, {"k": "a", "ts": 12, "v": 2}])
        == []
    )
    assert op.flat_map_batch([{"k": "a", "ts": 15, "v": 4}]) == [
        {"key": "a", "window_start": 0, "window_end": 10, "value": 1}
    ]
    assert op.get_state()["open_windows"] == [["a", 10, 20, 6]]


def test_mean_and_percentile_of_a_window() -> None:
    vals = [5, 1, 9, 3, 7, 2]
    events = [{"k": "a", "ts": i, "v": v} for i, v in enumerate(vals)]
    mean = run_window(events, 2, aggregate="mean", size=100).outputs  # type: ignore[attr-defined]
    p50 = run_window(events, 2, aggregate="percentile", q=50, size=100).outputs  # type: ignore[attr-defined]
    assert mean[0]["value"] == pytest.approx(statistics.mean(vals))
    assert p50[0]["value"] == pytest.approx(statistics.median(vals))


def test_reduce_folds_values_with_a_function() -> None:
    events = [{"k": "a", "ts": i, "v": i} for i in range(5)]
    op = run_window(events, 2, reduce=max, size=100)
    assert op.outputs[0]["value"] == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"aggregate": "sum"}, "size="),
        ({"aggregate": "sum", "size": 10, "gap": 3}, "gap= only"),
        ({"aggregate": "median", "size": 10}, "unknown aggregate"),
        ({"aggregate": "percentile", "size": 10}, "needs q"),
        ({"size": 10}, "exactly one"),
        ({"aggregate": "sum", "size": 10, "late": "keep"}, "late must be"),
        ({"aggregate": "sum", "size": 10, "max_lateness": -1}, "max_lateness"),
    ],
)
def test_bad_window_configs_are_named_errors(
    config: dict[str, Any], words: str
) -> None:
    with pytest.raises(StreamConfigError, match=words):
        Window(key="k", **config)


# --- interval join ---------------------------------------------------------------


@st.composite
def two_sided(draw: Any, max_shift: int) -> list[tuple[int, dict[str, Any]]]:
    left = draw(shuffled_events(max_shift))
    right = draw(shuffled_events(max_shift))
    tagged = [(0, x) for x in left] + [(1, {**x, "id": x["id"] + 1000}) for x in right]
    # interleave the two arrival orders keeping each side's own order
    picks = draw(st.permutations([s for s, _ in tagged]))
    queues = [[x for s, x in tagged if s == 0], [x for s, x in tagged if s == 1]]
    return [(s, queues[s].pop(0)) for s in picks]


def run_join(
    arrivals: list[tuple[int, dict[str, Any]]], **config: Any
) -> tuple[IntervalJoin, list[Any]]:
    op = IntervalJoin(left_key="k", right_key="k", **config)
    out: list[Any] = []
    i = 0
    while i < len(arrivals):  # runs of one side form a batch, as the runtime sends
        j = i
        while j < len(arrivals) and arrivals[j][0] == arrivals[i][0]:
            j += 1
        out += op.co_map_batch([x for _, x in arrivals[i:j]], arrivals[i][0])
        i = j
    return op, out


@given(
    arrivals=two_sided(max_shift=6), lower=st.integers(-8, 2), width=st.integers(0, 8)
)
def test_interval_join_within_lateness_equals_the_nested_loop(
    arrivals: list[tuple[int, dict[str, Any]]], lower: int, width: int
) -> None:
    op, out = run_join(arrivals, lower=lower, upper=lower + width, max_lateness=6)
    got = [(r["left"]["id"], r["right"]["id"]) for r in out]
    assert len(got) == len(set(got))
    want = reference_join(arrivals, lower=lower, upper=lower + width, max_lateness=6)
    assert set(got) == want and op.late_items == 0


@given(arrivals=two_sided(max_shift=30), lateness=st.integers(0, 5))
def test_interval_join_leaves_out_only_late_items(
    arrivals: list[tuple[int, dict[str, Any]]], lateness: int
) -> None:
    _, out = run_join(arrivals, lower=-5, upper=5, max_lateness=lateness)
    got = {(r["left"]["id"], r["right"]["id"]) for r in out}
    assert got == reference_join(arrivals, lower=-5, upper=5, max_lateness=lateness)


def test_interval_join_memory_is_bounded_by_the_watermarks() -> None:
    op = IntervalJoin(left_key="k", right_key="k", lower=-2, upper=2, max_lateness=1)
    for t in range(1000):
        op.co_map_batch([{"k": t % 3, "ts": t}], 0)
        op.co_map_batch([{"k": t % 3, "ts": t}], 1)
    assert op.buffered() <= 20
    assert op.matched > 0


def test_interval_join_rejects_an_empty_interval() -> None:
    with pytest.raises(StreamConfigError, match="lower <= upper"):
        IntervalJoin(left_key="k", right_key="k", lower=3, upper=1)
