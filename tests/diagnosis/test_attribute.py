"""Attribution on recorded counters of synthetic jobs: one scenario per class."""

from __future__ import annotations

from typing import Any

from sage_core.diagnosis.attribute import (
    MARGIN,
    breakdown,
    classify,
    critical_path,
    gain,
    ranked,
)


def verdict(model: Any) -> dict[str, Any]:
    return classify(model, breakdown(model))


def test_a_saturated_operator_is_compute_bound(counters: Any) -> None:
    model = counters(
        {
            "src#0": {"busy": 0.05, "blocked": 0.7},
            "op#0": {"busy": 0.95},
            "sink#0": {"busy": 0.05},
        }
    )
    v = verdict(model)
    assert (v["operator"], v["class"]) == ("op", "compute")
    assert v["evidence"]["blocked_upstream"] == {"src": 0.7}


def test_a_slow_sink_is_named_not_the_blocked_operator(counters: Any) -> None:
    model = counters(
        {
            "src#0": {"busy": 0.05, "blocked": 0.5},
            "op#0": {"busy": 0.2, "blocked": 0.6},
            "sink#0": {"busy": 0.9},
        }
    )
    v = verdict(model)
    assert (v["operator"], v["class"]) == ("sink", "backpressure")
    assert v["evidence"]["blocked_upstream"] == {"op": 0.6}


def test_one_hot_replica_of_a_keyed_operator_is_skew_with_its_keys(
    counters: Any,
) -> None:
    model = counters(
        {
            "src#0": {"busy": 0.05, "items": 2000, "keys": {"'hot'": 900, "'a'": 10}},
            "op#0": {"busy": 0.9, "items": 1700},
            "op#1": {"busy": 0.1, "items": 300},
            "sink#0": {"busy": 0.05, "items": 2000},
        },
        keyed=True,
    )
    v = verdict(model)
    assert (v["operator"], v["class"]) == ("op", "skew")
    assert v["evidence"]["hot_replica"] == "op#0"
    assert v["evidence"]["hot_keys"][0]["key"] == "'hot'"


def test_replicas_crowded_on_one_worker_is_placement(counters: Any) -> None:
    model = counters(
        {
            "src#0": {"busy": 0.05},
            "op#0": {"busy": 0.5},
            "op#1": {"busy": 0.48},
            "sink#0": {"busy": 0.05},
        },
        worker_of={"op#0": "w0", "op#1": "w0", "src#0": "w1", "sink#0": "w1"},
    )
    v = verdict(model)
    assert (v["operator"], v["class"]) == ("op", "placement")
    assert v["evidence"]["worker"] == "w0"
    assert v["evidence"]["idle_worker"] == "w1"


def test_a_busy_source_with_idle_operators_is_source_bound(counters: Any) -> None:
    model = counters(
        {
            "src#0": {"pull": 0.85},
            "op#0": {"busy": 0.2},
            "sink#0": {"busy": 0.1},
        }
    )
    v = verdict(model)
    assert (v["operator"], v["class"]) == ("src", "source")


def test_nothing_busy_with_tiny_packets_is_overhead(counters: Any) -> None:
    model = counters(
        {
            "src#0": {"busy": 0.1},
            "op#0": {"busy": 0.2},
            "sink#0": {"busy": 0.1},
        },
        packet=1,
    )
    v = verdict(model)
    assert v["class"] == "overhead"
    assert v["evidence"]["items_per_packet"] == 1.0


def test_the_critical_path_runs_source_to_sink(counters: Any) -> None:
    model = counters({"src#0": {}, "op#0": {"busy": 0.5}, "sink#0": {}})
    assert critical_path(model, breakdown(model)) == ["src", "op", "sink"]


def _rec(action: str, throughput_ratio: float, p99_ratio: float) -> dict[str, Any]:
    return {
        "action": action,
        "effect": {"throughput_ratio": throughput_ratio, "p99_ratio": p99_ratio},
    }


def test_a_gain_within_the_models_error_does_not_buy_a_longer_tail() -> None:
    recs = [
        _rec("bigger packets", 1.013, 3.8),  # +1.3% for a p99 3.8x longer
        _rec("more replicas", 1.004, 0.8),
        _rec("deeper queues", 0.97, 1.0),
        _rec("round-robin", 1.12, 1.5),
        _rec("fewer workers", 0.5, 0.5),
        _rec("spread", 1.30, 1.1),
    ]
    order = [r["action"] for r in ranked(recs)]
    assert order == [
        "spread",  # real gains first, most throughput first
        "round-robin",
        "more replicas",  # no real throughput change: shortest tail first
        "deeper queues",
        "bigger packets",
        "fewer workers",  # real losses last
    ]
    assert MARGIN == 0.05
    gains = {r["action"]: gain(r["effect"]) for r in recs}
    assert gains == {
        "bigger packets": "none",
        "more replicas": "latency",
        "deeper queues": "none",
        "round-robin": "throughput",
        "fewer workers": "loss",
        "spread": "throughput",
    }
