"""The tail breakdown names the replica and part the slowest packets lose time in."""

from __future__ import annotations

from typing import Any

from sage_core.cli.diagnose import _tail_line
from sage_core.diagnosis import ServiceModel
from sage_core.diagnosis.tail import tail_of
from tests.diagnosis.conftest import fake_chain_model


def _trace(op: str, queue_s: float, sink_transit_s: float) -> dict[str, Any]:
    hops = [
        {
            "replica": op,
            "task": "op",
            "transit_s": 0.001,
            "queue_wait_s": queue_s,
            "service_s": 0.005,
            "blocked_s": 0.0,
        },
        {
            "replica": "sink#0",
            "task": "sink",
            "transit_s": sink_transit_s,
            "queue_wait_s": 0.0002,
            "service_s": 0.0001,
            "blocked_s": 0.0,
        },
    ]
    total = sum(h[k] for h in hops for k in h if k.endswith("_s"))
    return {"outcome": "sink", "origin": "src#0", "end_to_end_s": total, "hops": hops}


def _model(traces: list[dict[str, Any]]) -> Any:
    model = fake_chain_model(
        arrivals=ServiceModel({1: (0.001,) * 3}),
        stages=[("op", ServiceModel({1: (0.005,) * 3}), 2)],
        items=100,
    )
    model.traces = traces
    return model


def test_the_slowest_packets_are_traced_to_one_replicas_queue() -> None:
    """Typical packets wait 2 ms at either replica (half of them at op#1: 1 ms on
    average per packet); the two slowest waited 80 ms in op#1's queue and 10 ms
    more on the way to the sink."""
    typical = [_trace(f"op#{i % 2}", 0.002, 0.001) for i in range(98)]
    slow = [_trace("op#1", 0.080, 0.011) for _ in range(2)]
    got = tail_of(_model(typical + slow))
    assert got is not None
    assert got["traces"] == 100 and got["slowest"] == 2
    first, second = got["parts"][:2]
    assert (first["replica"], first["part"]) == ("op#1", "queue_wait")
    assert abs(first["extra_ms"] - 79.0) < 1e-6
    assert (second["replica"], second["part"]) == ("sink#0", "transit")
    assert abs(second["extra_ms"] - 10.0) < 1e-6
    e2e = got["end_to_end_ms"]
    assert e2e["slowest"] > e2e["typical"]
    line = _tail_line(got)
    assert "op#1 queue wait +79.0 ms" in line and "sink#0 transit +10.0 ms" in line


def test_too_few_traces_make_no_tail() -> None:
    assert tail_of(_model([_trace("op#0", 0.002, 0.001)] * 19)) is None
