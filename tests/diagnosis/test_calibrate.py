"""Calibration: service samples at batch sizes the baseline never ran (calibration
runs), and the CPU a packet crossing workers costs each end (loop overhead)."""

from __future__ import annotations

from typing import Any

import pytest

from sage_core.diagnosis import DiagnosisError, ServiceModel, simulate
from sage_core.diagnosis.calibrate import extend_service


def at(**sizes: float) -> ServiceModel:
    """Deterministic service seconds per batch size (``k1=0.011``)."""
    return ServiceModel({int(k[1:]): (s,) * 5 for k, s in sizes.items()})


def test_samples_fill_the_sizes_the_baseline_lacks_and_keep_its_own(
    engine_model: Any,
) -> None:
    base = engine_model(at(k1=0.011), 1)
    calib = engine_model(at(k1=0.5, k2=0.012), 1)
    out = extend_service(base, [calib])
    gen = out.task("gen").service
    assert gen.by_size[1] == (0.011,) * 5  # measured in the baseline: kept
    assert gen.by_size[2] == (0.012,) * 5  # new: from the calibration run
    assert base.task("gen").service.sizes == [1]  # the baseline is not changed
    assert out.traces is base.traces and out.duration_s == base.duration_s


def test_a_calibrated_engine_curve_predicts_the_gain_of_a_second_replica(
    engine_model: Any,
) -> None:
    """Measured at size 1 only, the engine's cost is taken as proportional to the
    batch: a second replica gains nothing. A calibration run at size 2 shows a
    fixed cost per call (11 ms for 1, 12 ms for 2), and two replicas' concurrent
    calls then run nearly twice as fast."""
    one_size = engine_model(at(k1=0.011), 2)
    before = simulate(one_size).throughput
    calib = engine_model(at(k2=0.012), 2)
    after = simulate(extend_service(one_size, [calib])).throughput
    alone = simulate(engine_model(at(k1=0.011), 1)).throughput
    assert before / alone == pytest.approx(1.0, rel=0.03)
    assert after / alone == pytest.approx(2 * 11 / 12, rel=0.03)


def test_runs_with_other_replica_counts_do_not_calibrate(engine_model: Any) -> None:
    base = engine_model(at(k1=0.011), 1)
    other = engine_model(at(k2=0.012), 2)
    with pytest.raises(DiagnosisError, match="shares no operator"):
        extend_service(base, [other])
    assert extend_service(base, []) is base


def test_each_end_of_a_crossing_packet_costs_its_own_workers_loop(
    chain: Any, svc: Any
) -> None:
    """A worker's loop CPU beyond its steps (``overhead_s``) is spread over the
    packets that crossed workers there: the source-and-sink worker (2 ms) and the
    operator's (1 ms) each saw 400 packet ends (200 one-item packets in and out),
    so an end costs 5 us on the first and 2.5 us on the second; the job-wide
    figure is 3 ms over 400 crossing packets."""
    from sage_core.diagnosis.whatif import calibrate_transport

    model = chain(
        arrivals=svc("det", 1e-4),
        stages=[("op", svc("det", 1e-3), 1), ("sink", svc("det", 1e-5), 1)],
        items=200,
        capacity=4,
        slots=1,
        worker_of={"src/0": "a", "op/0": "b", "sink/0": "a"},
    )
    model.runtime = "dask"
    model.overhead_s = {"a": 0.002, "b": 0.001}
    assert calibrate_transport(model) == pytest.approx(0.003 / 400)
    assert model.end_s == pytest.approx({"src": 5e-6, "op": 2.5e-6, "sink": 5e-6})
