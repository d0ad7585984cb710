"""Builders of synthetic job models (test doubles of recorded jobs) for the
diagnosis tests: chains of tasks with given service distributions."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest

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


@pytest.fixture
def chain() -> Callable[..., JobModel]:
    """``fake_chain_model``: a synthetic source -> stages chain."""
    return fake_chain_model


@pytest.fixture
def svc() -> Callable[..., ServiceModel]:
    """``samples``: a service-time distribution at batch size 1."""
    return samples
