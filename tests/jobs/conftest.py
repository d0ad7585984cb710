"""Plain ``dask scheduler``/``dask worker`` processes started with SAGE's preload, a
pipeline spec with a slow map, and the ``sage`` command, for the job manager tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SLOW_MODULE = """
import time

def slow(x):
    time.sleep(0.01)
    return x
"""

PRELOAD = ["--preload", "sage_core.runtime.preload"]


@pytest.fixture
def job_spec() -> Callable[[Path, str, int, Path], Path]:
    """``job_spec(path, name, n, out)``: range(n) -> a 10 ms map -> jsonl ``out``."""

    def write(path: Path, name: str, n: int, out: Path) -> Path:
        path.write_text(
            f"name: {name}\n"
            "operators:\n"
            f"  - {{name: numbers, use: range, config: {{stop: {n}}}}}\n"
            "  - {name: slow, use: 'slowmod:slow', role: map, inputs: [numbers]}\n"
            f"  - {{name: out, use: jsonl, config: {{path: {out}}}, inputs: [slow]}}\n"
        )
        return path

    return write


@pytest.fixture
def sage_run(sage_cmd) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``sage_run(*args)``: the ``sage`` command, its output captured."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*sage_cmd, *args], capture_output=True, text=True, timeout=120, check=False
        )

    return run


class DaskProcesses:
    """Starts plain dask schedulers and workers sharing one ``SAGE_HOME``; a module
    the pipeline imports is on their path only (not the test's)."""

    def __init__(self, processes: Any, tmp_path: Path, free_port: Any, wait_for: Any):
        self.processes, self.tmp, self.free_port = processes, tmp_path, free_port
        self.wait_for = wait_for
        (tmp_path / "slowmod.py").write_text(SLOW_MODULE)
        self.env = {**os.environ, "PYTHONPATH": str(tmp_path)}
        self.env["SAGE_HOME"] = str(tmp_path / "home")
        self.dask = str(Path(sys.executable).parent / "dask")
        self.started = 0

    def scheduler(self) -> tuple[Any, str, str]:
        """(process, address, dashboard URL) of a new scheduler."""
        self.started += 1
        sched_file = self.tmp / f"scheduler{self.started}.json"
        dashboard = f"127.0.0.1:{self.free_port()}"
        proc = self.processes.start(
            [self.dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--dashboard-address", dashboard, "--scheduler-file", str(sched_file),
             *PRELOAD],
            f"scheduler{self.started}", cwd=self.tmp, env=self.env,
        )  # fmt: skip
        self.wait_for(sched_file.exists, 60, "the scheduler file")
        address = json.loads(sched_file.read_text())["address"]
        return proc, address, f"http://{dashboard}"

    def worker(self, address: str) -> Any:
        from distributed import Client

        proc = self.processes.start(
            [self.dask, "worker", address, "--nthreads", "2", "--no-nanny", *PRELOAD],
            f"worker{self.started}", cwd=self.tmp, env=self.env,
        )  # fmt: skip
        with Client(address) as c:
            c.wait_for_workers(1, timeout=60)
        return proc


@pytest.fixture
def dask_processes(processes, tmp_path, free_port, wait_for) -> DaskProcesses:
    return DaskProcesses(processes, tmp_path, free_port, wait_for)


@pytest.fixture
def plain_dask(dask_processes) -> str:
    """The address of a plain dask scheduler + worker with SAGE's preload."""
    _, address, _ = dask_processes.scheduler()
    dask_processes.worker(address)
    return address


def until(jc: Any, job: str, status: str) -> dict[str, Any]:
    for _ in range(1200):
        info = jc.status(job)
        if info["status"] == status:
            return dict(info)
        time.sleep(0.1)
    raise AssertionError(f"{job} never {status}: {jc.logs(job)}")


@pytest.fixture
def until_status() -> Callable[[Any, str, str], dict[str, Any]]:
    """``until_status(job_client, job, status)``: poll until the job has it."""
    return until
