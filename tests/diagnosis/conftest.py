"""Builders of synthetic job models (test doubles of recorded jobs) for the
diagnosis tests: chains of tasks with given service distributions."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import strategies as st

from sage_core.diagnosis.model import ChannelModel, JobModel, ServiceModel, TaskModel


def samples(draw: str, mean_s: float, n: int = 4000, seed: int = 1) -> ServiceModel:
    """``n`` service samples at batch size 1: exponential or deterministic."""
    rng = random.Random(seed)
    if draw == "exp":
        return ServiceModel({1: tuple(rng.expovariate(1 / mean_s) for _ in range(n))})
    return ServiceModel({1: (mean_s,) * 3})


def fake_chain_model(
    *,
    arrivals: ServiceModel,
    stages: Sequence[tuple[str, ServiceModel, int]],
    items: int,
    capacity: int = 0,
    slots: int = 64,
    worker_of: dict[str, str] | None = None,
) -> JobModel:
    """source -> stages[0] -> ... in one packet per item; ``stages`` are
    ``(name, service, parallelism)``; every replica on worker ``w`` unless placed."""
    tasks = [
        TaskModel(
            name="src",
            operators=("src",),
            role="source",
            replicas=["src/0"],
            service=ServiceModel(),
            items=items,
            pull=arrivals,
        )
    ]
    channels = []
    prev = "src"
    for name, service, par in stages:
        tasks.append(
            TaskModel(
                name=name,
                operators=(name,),
                role="map",
                replicas=[f"{name}/{i}" for i in range(par)],
                service=service,
                queue_capacity=capacity,
            )
        )
        channels.append(ChannelModel(prev, name, "round-robin"))
        prev = name
    placed = {rid: "w" for t in tasks for rid in t.replicas}
    placed.update(worker_of or {})
    return JobModel(
        job="fake",
        runtime="local",
        policy="local",
        tasks=tasks,
        channels=channels,
        worker_of=placed,
        slots={w: slots for w in set(placed.values())},
        buffer_size=1,
        max_packets=1,
        duration_s=1.0,
        replicas={},
        traces=[],
        record={},
    )


#: stage costs (seconds per item) of ``fake_random_chain`` (hypothesis strategy)
STAGE_COSTS = st.lists(st.floats(0.0001, 0.003), min_size=1, max_size=3)


def fake_random_chain(
    costs: Sequence[float],
    par: int,
    capacity: int,
    *,
    arrival_s: float,
    slots: int = 64,
) -> JobModel:
    """A chain of one stage per cost (``par`` replicas each), 300 items arriving
    ``arrival_s`` apart on average; exponential samples, 50 per distribution."""
    return fake_chain_model(
        arrivals=samples("exp", arrival_s, n=50),
        stages=[
            (f"s{i}", samples("exp", c, n=50, seed=i), par) for i, c in enumerate(costs)
        ],
        items=300,
        capacity=capacity,
        slots=slots,
    )


#: the engine URL of ``fake_engine_model``'s engine stage
ENGINE_URL = "http://engine.test:8000/v1"


def fake_engine_model(service: ServiceModel, replicas: int) -> JobModel:
    """src -> gen, ``gen`` (``replicas`` replicas) calling an external engine with
    ``service`` seconds per call size; the source is near instant."""
    model = fake_chain_model(
        arrivals=samples("det", 1e-6),
        stages=[("gen", service, replicas)],
        items=4000,
        capacity=2,
        slots=1,
    )
    model.task("gen").engine = ENGINE_URL
    return model


@pytest.fixture
def engine_model() -> Callable[..., JobModel]:
    """``fake_engine_model``: an engine stage fed by a near-instant source."""
    return fake_engine_model


@pytest.fixture
def chain() -> Callable[..., JobModel]:
    """``fake_chain_model``: a synthetic source -> stages chain."""
    return fake_chain_model


@pytest.fixture
def svc() -> Callable[..., ServiceModel]:
    """``samples``: a service-time distribution at batch size 1."""
    return samples


def fake_counters_model(
    replicas: dict[str, dict[str, float]],
    *,
    keyed: bool = False,
    worker_of: dict[str, str] | None = None,
    packet: int = 16,
) -> JobModel:
    """A job src -> op -> sink whose replicas (``"op#0"`` ...) report the given
    utilisation (``busy``), blocked share, items and, for the source, pull share, as
    recorded counters over a 10 s run (a test double of a job record)."""
    duration = 10.0
    snaps: dict[str, dict[str, object]] = {}
    tasks: dict[str, list[str]] = {}
    for rid, c in replicas.items():
        task = rid.split("#")[0]
        tasks.setdefault(task, []).append(rid)
        items = int(c.get("items", 1000))
        batches = max(1, items // packet)
        snaps[rid] = {
            "replica": rid,
            "items_in": 0 if task == "src" else items,
            "items_out": items,
            "batches": batches,
            "service_s": c.get("busy", 0.0) * duration,
            "source_s": c.get("pull", 0.0) * duration,
            "queue_wait_s": 0.001 * items,
            "blocked_s": c.get("blocked", 0.0) * duration,
            "keys": c.get("keys", {}),
            "operators": {task: {"items_out": items}},
        }
    model = fake_chain_model(
        arrivals=samples("det", 0.0001),
        stages=[(t, samples("det", 0.001), len(r)) for t, r in tasks.items()][1:],
        items=sum(int(c.get("items", 1000)) for r, c in replicas.items() if "src" in r),
        worker_of=worker_of,
        slots=1,
    )
    model.duration_s = duration
    model.replicas = snaps
    for t in model.tasks:
        t.replicas = tasks[t.name]
        if t.name == "sink":
            t.role = "sink"
    model.worker_of = {
        rid: (worker_of or {}).get(rid, "w") for rids in tasks.values() for rid in rids
    }
    model.slots = {w: 1 for w in set(model.worker_of.values())}
    if keyed:
        model.channels[0].keyed = True
    return model


@pytest.fixture
def counters() -> Callable[..., JobModel]:
    """``fake_counters_model``: a src -> op -> sink job from given counters."""
    return fake_counters_model
