"""Fixtures of the Dask runtime tests: one embedded cluster per module, job records
kept under the test's temporary directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    sage_cmd: list[str],
    process_group: Any,
    free_port: Callable[[], int],
    start_scheduler: Callable[..., tuple[Any, str]],
) -> Iterator[dict[str, Any]]:
    """A real ``sage scheduler`` and three ``sage worker`` processes (cpu-0, cpu-1,
    gpu-0 with ``--resources GPU=1``), one cluster per module."""
    tmp = tmp_path_factory.mktemp("cluster")
    group = process_group(tmp)
    dash = free_port()
    _, address = start_scheduler(group, tmp, dashboard=dash)
    try:
        for name, extra in (
            ("cpu-0", []),
            ("cpu-1", []),
            ("gpu-0", ["--resources", "GPU=1"]),
        ):
            group.start(
                [
                    *sage_cmd,
                    "worker",
                    address,
                    "--name",
                    name,
                    "--host",
                    "127.0.0.1",
                    *extra,
                ],
                f"worker-{name}",
                cwd=tmp,
            )
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(3, timeout=120)
            yield {
                "address": address,
                "client": client,
                "dashboard": f"http://127.0.0.1:{dash}",
                "tmp": tmp,
                "group": group,
            }
    finally:
        group.stop_all()
