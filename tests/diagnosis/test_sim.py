"""The simulator against queueing results with known answers."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core.diagnosis import ServiceModel, simulate
from tests.diagnosis.conftest import STAGE_COSTS, fake_random_chain

N = 20_000


def test_mm1_utilisation_and_mean_wait(chain: Any, svc: Any) -> None:
    lam, mu = 0.5, 1.0  # per ms
    model = chain(
        arrivals=svc("exp", 1 / lam / 1e3, seed=2),
        stages=[("op", svc("exp", 1 / mu / 1e3, seed=3), 1)],
        items=N,
    )
    out = simulate(model, seed=4)
    rho = lam / mu
    wq_ms = rho / (mu - lam)  # M/M/1: Wq = rho / (mu - lambda)
    assert out.operators["op"]["utilisation"] == pytest.approx(rho, rel=0.05)
    assert out.operators["op"]["queue_wait_ms"] == pytest.approx(wq_ms, rel=0.15)
    assert out.throughput == pytest.approx(lam * 1e3, rel=0.05)


def test_md1_mean_wait(chain: Any, svc: Any) -> None:
    lam, mu = 0.8, 1.0
    model = chain(
        arrivals=svc("exp", 1 / lam / 1e3, seed=5),
        stages=[("op", svc("det", 1 / mu / 1e3), 1)],
        items=N,
    )
    out = simulate(model, seed=6)
    rho = lam / mu
    wq_ms = rho / (2 * mu * (1 - rho))  # Pollaczek-Khinchine for D service
    assert out.operators["op"]["utilisation"] == pytest.approx(rho, rel=0.05)
    assert out.operators["op"]["queue_wait_ms"] == pytest.approx(wq_ms, rel=0.15)


def test_queue_wait_is_the_wait_in_each_operators_own_queue(
    chain: Any, svc: Any
) -> None:
    """A fast stage behind a loaded one: items reach it spaced by the first
    stage's service, so they wait in its queue for nothing, however long they
    waited upstream."""
    lam, mu = 0.5, 1.0
    model = chain(
        arrivals=svc("exp", 1 / lam / 1e3, seed=2),
        stages=[
            ("op", svc("exp", 1 / mu / 1e3, seed=3), 1),
            ("fast", svc("det", 0.1 / mu / 1e3), 1),
        ],
        items=N,
    )
    out = simulate(model, seed=4)
    assert out.operators["op"]["queue_wait_ms"] == pytest.approx(1.0, rel=0.15)
    assert out.operators["fast"]["queue_wait_ms"] < 0.05


def test_tandem_with_blocking_runs_at_the_slow_stage_and_blocks_the_fast(
    chain: Any, svc: Any
) -> None:
    model = chain(
        arrivals=svc("det", 0.0001),
        stages=[("a", svc("det", 0.001), 1), ("b", svc("det", 0.002), 1)],
        items=2000,
        capacity=1,
    )
    out = simulate(model)
    assert out.throughput == pytest.approx(500, rel=0.02)
    assert out.operators["b"]["utilisation"] == pytest.approx(1.0, rel=0.02)
    assert out.operators["a"]["utilisation"] == pytest.approx(0.5, rel=0.03)
    assert out.operators["a"]["blocked"] == pytest.approx(0.5, rel=0.05)


def test_replicas_share_worker_slots(chain: Any, svc: Any) -> None:
    def run(slots: int) -> float:
        model = chain(
            arrivals=svc("det", 0.00001),
            stages=[("op", svc("det", 0.001), 4)],
            items=4000,
            capacity=4,
            slots=slots,
        )
        return simulate(model).throughput

    assert run(1) == pytest.approx(1000, rel=0.03)
    assert run(4) == pytest.approx(4000, rel=0.05)


def test_batch_sizes_between_measured_ones_are_interpolated() -> None:
    svc = ServiceModel({1: (0.002,) * 5, 9: (0.010,) * 5})
    assert svc.coverage(1) == "measured"
    assert svc.coverage(4) == "interpolated"
    assert svc.coverage(32) == "extrapolated"
    assert svc.mean(5) == pytest.approx(0.006)
    assert svc.draw(5, random.Random(0)) == pytest.approx(0.006)


@given(STAGE_COSTS, st.integers(1, 3), st.integers(0, 3))
def test_every_item_reaches_the_sink_and_utilisation_is_a_fraction(
    costs: list[float], par: int, capacity: int
) -> None:
    model = fake_random_chain(costs, par, capacity, arrival_s=0.0005)
    out = simulate(model)
    assert out.items == 300
    for op in out.operators.values():
        assert 0.0 <= op["utilisation"] <= 1.0 + 1e-9
        assert sum(op["items"]) in (0, 300)


def test_workers_on_one_machine_share_its_cores(chain: Any, svc: Any) -> None:
    model = chain(
        arrivals=svc("det", 0.00001),
        stages=[("op", svc("det", 0.001), 4)],
        items=4000,
        capacity=4,
        slots=1,
        worker_of={f"op/{i}": f"w{i}" for i in range(4)},
    )
    assert simulate(model).throughput == pytest.approx(4000, rel=0.05)
    assert simulate(model, host_cores=2).throughput == pytest.approx(2000, rel=0.05)


def test_latency_scale_follows_the_bulk_of_the_traces_not_one_slow_one() -> None:
    """A short run's trace p99 rests on a few traces: the what-if calibrates its
    latency on the median ratio over several quantiles, so one stalled trace in the
    recorded run does not scale every prediction."""
    from sage_core.diagnosis.sim import SimResult
    from sage_core.diagnosis.whatif import latency_scale

    modelled = {0.5: 10.0, 0.75: 12.0, 0.9: 15.0, 0.95: 17.0, 0.99: 20.0}
    base = SimResult(
        throughput=1.0,
        p50_ms=10.0,
        p99_ms=20.0,
        makespan_s=1.0,
        items=100,
        operators={},
        quantiles_ms=modelled,
    )
    measured = {q: 2 * v for q, v in modelled.items()}
    measured[0.99] = 400.0  # one trace that waited behind a stall
    assert latency_scale({"quantiles_ms": measured}, base) == pytest.approx(2.0)


def test_a_tail_measured_by_enough_traces_is_calibrated_on_its_own_ratio() -> None:
    """Where at least ``TAIL_TRACES`` traces lie beyond the p99, the model's p99 is
    scaled by the measured p99 over it (pauses stretch the run's tail more than its
    median); where fewer do, by the median ratio, as ``latency_scale``."""
    from sage_core.diagnosis.sim import SimResult
    from sage_core.diagnosis.whatif import TAIL_TRACES, latency_scales

    modelled = {0.5: 10.0, 0.75: 12.0, 0.9: 15.0, 0.95: 17.0, 0.99: 20.0}
    base = SimResult(1.0, 10.0, 20.0, 1.0, 100, {}, quantiles_ms=modelled)
    measured = {q: 2 * v for q, v in modelled.items()}
    measured[0.99] = 60.0
    many = int(TAIL_TRACES / 0.01) + 1
    got = latency_scales({"quantiles_ms": measured, "traces": many}, base)
    assert got[0.99] == pytest.approx(3.0)
    assert got[0.5] == pytest.approx(2.0)
    few = latency_scales({"quantiles_ms": measured, "traces": many // 4}, base)
    assert few[0.99] == pytest.approx(2.0)  # 2 traces beyond the p99: the bulk
    assert few[0.95] == pytest.approx(2.0)


def test_latency_scale_is_one_when_the_model_has_no_latency() -> None:
    from sage_core.diagnosis.sim import SimResult
    from sage_core.diagnosis.whatif import latency_scale

    base = SimResult(1.0, 0.0, 0.0, 1.0, 0, {})
    assert latency_scale({"quantiles_ms": {0.5: 3.0}}, base) == 1.0


def test_pool_runs_takes_every_runs_traces_the_median_duration_and_typical_service(
    counters: Any,
) -> None:
    from sage_core.diagnosis import DiagnosisError, pool_runs

    reps = {"src#0": {"busy": 0.05}, "op#0": {"busy": 0.9}, "sink#0": {"busy": 0.05}}
    runs = [counters(reps) for _ in range(3)]
    for i, (m, seconds) in enumerate(zip(runs, (10.0, 14.0, 11.0), strict=True)):
        m.duration_s = seconds
        m.traces = [{"end_to_end_s": 0.01 * (i + 1), "outcome": "sink"}] * 5
    for i, m in enumerate(runs):  # each run's own service samples, to tell apart
        m.task("op").service = ServiceModel({1: (0.001 * (i + 1),) * 3})
    pooled = pool_runs(runs[0], runs[1:])
    assert pooled.duration_s == pytest.approx(11.0)
    assert len(pooled.traces) == 15
    # service times of the typical run (11 s), not of the first one named (10 s)
    assert pooled.task("op").service == runs[2].task("op").service
    assert runs[0].task("op").service.by_size[1][0] == 0.001  # not changed
    assert runs[0].duration_s == 10.0 and len(runs[0].traces) == 5  # not changed

    other = counters({**reps, "op#1": {"busy": 0.9}})  # two op replicas
    with pytest.raises(DiagnosisError, match="not a run of the same pipeline"):
        pool_runs(runs[0], [other])
