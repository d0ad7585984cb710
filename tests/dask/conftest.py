"""Fixtures of the Dask runtime tests: one embedded cluster per module, job records
kept under the test's temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _own_sage_home(sage_home: Path) -> Path:
    """Every test here keeps its job records in its own ``SAGE_HOME``."""
    return sage_home


@pytest.fixture(scope="module")
def embedded() -> Iterator[Any]:
    """A DaskEnvironment's in-process cluster: 2 workers, the second with GPU=1."""
    from sage_core.api.dask_environment import DaskEnvironment

    env = DaskEnvironment("fixture", n_workers=2, worker_resources={1: {"GPU": 1}})
    try:
        env.client.wait_for_workers(2)
        yield env.client
    finally:
        env.close()
