"""Real `sage scheduler` + `sage worker` processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.slow


def _session_pids(pid: int) -> set[int]:
    """Pids of processes in the session (process group) led by ``pid``."""
    out = set()
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != pid and __import__("os").getsid(proc.pid) == pid:
                out.add(proc.pid)
        except (ProcessLookupError, psutil.Error, PermissionError):
            continue
    return out


def test_scheduler_and_two_workers_one_with_gpu(
    processes: Any,
    sage_cmd: list[str],
    tmp_path: Path,
    start_scheduler: Callable[..., tuple[Any, str]],
) -> None:
    from distributed import Client

    scheduler, address = start_scheduler(processes, tmp_path)
    cpu = processes.start(
        [*sage_cmd, "worker", address, "--name", "cpu-0", "--host", "127.0.0.1"],
        "worker-cpu",
        cwd=tmp_path,
    )
    gpu = processes.start(
        [
            *sage_cmd,
            "worker",
            address,
            "--name",
            "gpu-0",
            "--host",
            "127.0.0.1",
            "--resources",
            "GPU=1",
        ],
        "worker-gpu",
        cwd=tmp_path,
    )
    try:
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=120)
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            by_name = {w["name"]: w for w in workers}
            assert set(by_name) == {"cpu-0", "gpu-0"}
            assert by_name["gpu-0"]["resources"] == {"GPU": 1.0}
            assert by_name["cpu-0"]["resources"] == {}

            def plugins_loaded() -> list[bool]:
                from sage_core import plugins

                return [plugins._loaded]

            loaded = client.run(plugins_loaded)
            assert all(value == [True] for value in loaded.values())
            sched_loaded = client.run_on_scheduler(plugins_loaded)
            assert sched_loaded == [True]
    except Exception:
        for proc in (scheduler, cpu, gpu):
            print(processes.log(proc))
        raise

    children = {proc.pid: _session_pids(proc.pid) for proc in (cpu, gpu)}
    assert all(children.values()), "each nanny runs its worker in a child process"
    for proc in (gpu, cpu, scheduler):
        assert processes.stop(proc) == 0, processes.log(proc)
    leftover = [
        pid for pids in children.values() for pid in pids if psutil.pid_exists(pid)
    ]
    leftover = [pid for pid in leftover if psutil.Process(pid).status() != "zombie"]
    assert leftover == [], f"orphaned worker processes: {leftover}"
