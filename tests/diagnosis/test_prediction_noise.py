"""What-if predictions of short runs compare plans, not samples: every replica
draws from its own random stream (common random numbers), a short run is simulated
with several seeds, and a size measured a few times does not set the fitted cost
per item."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from sage_core.diagnosis import ServiceModel, simulate
from sage_core.diagnosis.results import SimResult, merged

#: 95% of batches take 10 ms, 5% take 300 ms (a GC pause, a stall)
HEAVY = ServiceModel({1: (0.010,) * 95 + (0.300,) * 5})


def short_run(chain: Any, svc: Any, items: int = 120, fast: int = 1) -> Any:
    """src -> slow (heavy-tailed, the bottleneck) -> fast (``fast`` replicas), as
    a short recorded run lasts."""
    model = chain(
        arrivals=svc("det", 1e-5),
        stages=[("slow", HEAVY, 1), ("fast", svc("exp", 0.009), fast)],
        items=items,
        capacity=4,
    )
    model.duration_s = simulate(model).makespan_s
    return model


def test_a_replica_in_both_plans_draws_the_same_service_times(
    chain: Any, svc: Any
) -> None:
    """Doubling the stage after the bottleneck leaves the bottleneck's draws as
    they were: with one random stream for all, they would shift with every
    change of timing, and part of the predicted effect would be sampling noise."""
    one, two = short_run(chain, svc), short_run(chain, svc, fast=2)
    for seed in range(5):
        base, more = simulate(one, seed=seed), simulate(two, seed=seed)
        assert more.operators["slow"]["service_ms"] == pytest.approx(
            base.operators["slow"]["service_ms"]
        )


def test_a_short_run_is_simulated_with_several_seeds(chain: Any, svc: Any) -> None:
    """Single 120-item simulations of the heavy-tailed stage spread by a factor of
    two from seed to seed; what the prediction simulates (several seeds merged)
    spreads far less."""
    from sage_core.diagnosis.whatif import _run

    model = short_run(chain, svc)
    single = [simulate(model, seed=s).throughput for s in range(8)]
    assert max(single) / min(single) > 1.5  # the noise the merge removes
    runs = [_run(model, s * 10, None).throughput for s in range(6)]
    assert max(runs) / min(runs) < 1.25


def test_a_long_run_is_simulated_once(chain: Any, svc: Any, monkeypatch: Any) -> None:
    from sage_core.diagnosis import whatif

    calls: list[int] = []
    real = whatif.simulate

    def counting(m: Any, **kw: Any) -> SimResult:
        calls.append(kw["seed"])
        return real(m, **kw)

    monkeypatch.setattr(whatif, "simulate", counting)
    whatif._run(short_run(chain, svc, items=whatif.MIN_SIM_ITEMS), 3, None)
    assert calls == [3]
    calls.clear()
    whatif._run(short_run(chain, svc, items=100), 3, None)
    assert calls == list(range(3, 3 + whatif.MAX_SEEDS))


def _result(span: float, p99: float, items: list[int], sizes: list[int]) -> SimResult:
    return SimResult(
        throughput=100 / span,
        p50_ms=p99 / 2,
        p99_ms=p99,
        makespan_s=span,
        items=100,
        operators={
            "op": {
                "replicas": 2,
                "utilisation": 0.5 * span,
                "items": items,
                "batch_sizes": sizes,
                "engine_items": len(sizes),
            }
        },
        cross_packets={"w": int(10 * span)},
        quantiles_ms={0.5: p99 / 2, 0.99: p99},
    )


def test_merged_results_average_the_runs() -> None:
    one = _result(1.0, 100.0, [60, 40], [1, 2])
    assert merged([one]) is one
    both = merged([one, _result(3.0, 300.0, [40, 60], [4])])
    assert both.makespan_s == 2.0
    assert both.throughput == pytest.approx(50.0)  # 100 items over the mean span
    assert both.p99_ms == 200.0 and both.quantiles_ms[0.5] == 100.0
    op = both.operators["op"]
    assert op["replicas"] == 2  # the same in every run: kept as it is
    assert op["utilisation"] == pytest.approx(1.0)
    assert op["items"] == [50, 50]
    assert op["batch_sizes"] == [1, 2, 4]
    assert op["engine_items"] == 2
    assert both.cross_packets == {"w": 20}


def test_a_size_measured_a_few_times_does_not_set_the_slope() -> None:
    """100 batches of 8 items at 80 ms and 3 of 11 items at 104 ms: the three set
    a line with a 16 ms fixed cost that halves the cost of 32 items; the fit keeps
    to the size the run measured (through the origin: 320 ms)."""
    svc = ServiceModel({8: (0.080,) * 100, 11: (0.104,) * 3})
    assert svc.coverage(11) == "measured"  # still drawn from its own samples
    assert svc.mean(32) == pytest.approx(0.320, rel=0.01)
    solid = ServiceModel({8: (0.080,) * 100, 11: (0.104,) * 40})
    a, b = solid.fit()
    assert a == pytest.approx(0.016, rel=0.01) and b == pytest.approx(0.008)
    assert statistics.fmean(solid.by_size[11]) == pytest.approx(0.104)
