"""Operators that wait on an external engine: declared by their contract, recorded
in the plan, and modelled as one engine batching their concurrent calls (not as the
worker's CPU)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sage_core import LocalEnvironment
from sage_core.contract import Contract, ContractError
from sage_core.diagnosis import ServiceModel, job_model, record_of, simulate
from sage_plugins.backends.openai_http import OpenAIBackend
from sage_plugins.rag.generation import Generate
from sage_plugins.rag.retrieval import Embed

URL = "http://engine.test:8000/v1"


def linear(a_s: float, b_s: float) -> ServiceModel:
    """Service ``a + b * k`` seconds, measured (deterministic) at k = 1..4."""
    return ServiceModel({k: (a_s + b_s * k,) * 3 for k in range(1, 5)})


def test_the_contract_names_its_engine_and_round_trips() -> None:
    contract = Contract(engine=URL)
    assert Contract.from_dict(contract.to_dict()) == contract
    assert Contract().engine is None
    with pytest.raises(ContractError, match="engine: must be a non-empty string"):
        Contract(engine="")


def test_stages_calling_a_server_declare_it_and_in_process_ones_do_not() -> None:
    served = {"backend": "openai", "backend_config": {"base_url": URL + "/"}}
    assert Generate.contract_for({**served, "stream": True}).engine == URL
    assert Embed.contract_for(served).engine == URL
    assert Embed.contract_for({"backend": "hash"}).engine is None
    assert OpenAIBackend.engine_for({}) is None


def test_replicas_share_an_engine_that_batches_their_calls(engine_model: Any) -> None:
    fixed = linear(0.010, 0.001)  # 11 ms alone; two calls at once take 12 ms each
    one = simulate(engine_model(fixed, 1))
    two = simulate(engine_model(fixed, 2))
    assert one.throughput == pytest.approx(1 / 0.011, rel=0.03)
    assert two.throughput / one.throughput == pytest.approx(2 * 11 / 12, rel=0.03)


def test_an_engine_without_fixed_cost_per_call_is_shared_like_a_cpu(
    engine_model: Any,
) -> None:
    proportional = linear(0.0, 0.004)
    one = simulate(engine_model(proportional, 1))
    two = simulate(engine_model(proportional, 2))
    assert two.throughput / one.throughput == pytest.approx(1.0, rel=0.03)


def test_engine_time_does_not_take_the_workers_cpu(chain: Any, svc: Any) -> None:
    stages = [("cpu", svc("det", 0.005), 1), ("gen", svc("det", 0.005), 1)]
    model = chain(arrivals=svc("det", 1e-6), stages=stages, items=2000, slots=1)
    shared = simulate(model).throughput  # both on the worker's one slot: 100/s
    model.task("gen").engine = URL
    offloaded = simulate(model).throughput  # pipelined: 200/s
    assert shared == pytest.approx(100, rel=0.05)
    assert offloaded == pytest.approx(200, rel=0.05)


def waits_on_engine(item: Any) -> Any:
    time.sleep(0.002)  # an HTTP call: the worker's CPU is free meanwhile
    return item


def burns_cpu(item: Any) -> Any:
    end = time.perf_counter() + 0.0005
    while time.perf_counter() < end:
        pass
    return item


def test_a_recorded_engine_stage_does_not_deflate_its_workers_cpu_stages() -> None:
    env = LocalEnvironment("engine-rec", chaining=False, buffer_size=1, trace_every=4)
    (
        env.from_collection(list(range(400)), name="src")
        .map(burns_cpu, name="cpu")
        .map(waits_on_engine, name="gen", contract={"engine": URL})
        .sink(lambda x: None, name="sink")
    )
    job = env.submit()
    record = record_of(job.plan, job.wait(60))
    ops = {o["name"]: o for o in record["plan"]["operators"]}
    assert ops["gen"]["contract"]["engine"] == URL
    model = job_model(record)
    assert model.task("gen").engine == URL and model.task("cpu").engine is None
    # the engine stage's 0.8 s of waiting is not counted as the worker's busy time
    assert set(model.deflation.values()) == {1.0}
    measured = record["metrics"]["replicas"]["gen#0"]["service_s"]
    modelled = sum(sum(v) for v in model.task("gen").service.by_size.values())
    assert modelled == pytest.approx(measured, rel=0.01)


def test_an_engine_load_beyond_the_measured_calls_is_flagged(engine_model: Any) -> None:
    from sage_core.diagnosis.whatif import validity

    measured_at_one = ServiceModel({1: (0.004,) * 5})
    model = engine_model(measured_at_one, 1)
    assert validity(model, simulate(model)) == []
    two = engine_model(measured_at_one, 2)
    notes = validity(two, simulate(two))
    assert notes and "engine had up to 2 items" in notes[0]
