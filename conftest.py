"""Shared test fixtures: plugin registration, in-process Dask clusters, subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Skip ``gpu`` tests on machines without a CUDA device."""
    import shutil

    if shutil.which("nvidia-smi"):
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def register_plugin() -> Iterator[Callable[[object, str], object]]:
    """Register throwaway plugin objects on SAGE's plugin manager for one test."""
    from sage_core.plugins import load_plugins, pm

    load_plugins()
    added: list[object] = []

    def add(plugin: object, name: str) -> object:
        pm.register(plugin, name=name)
        added.append(plugin)
        return plugin

    try:
        yield add
    finally:
        for plugin in added:
            pm.unregister(plugin)


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """A module-scoped in-process LocalCluster (2 workers, 1 thread each) and Client."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=":0",
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Returns a function giving a TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_port


@pytest.fixture(scope="session")
def sage_cmd() -> list[str]:
    """Command running the installed ``sage`` console script of the tested interpreter.

    The script (not ``python -c``) keeps the source tree off ``sys.path``, so the
    installed package with its compiled extension is what runs.
    """
    script = Path(sys.executable).parent / "sage"
    if not script.exists():
        pytest.fail(
            f"the sage console script is not installed next to {sys.executable}"
        )
    return [str(script)]


class ProcessGroup:
    """Starts subprocesses in their own sessions and makes sure none outlives the test."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, args: list[str], name: str, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
        proc.log_path = self.log_dir / f"{name}.log"  # type: ignore[attr-defined]
        proc.log_file = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
        """SIGTERM the process, wait, then SIGKILL its whole session if needed."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        proc.log_file.close()  # type: ignore[attr-defined]
        return int(proc.returncode)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
            try:  # anything left in the session (e.g. a nanny's worker) goes too
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture
def wait_for() -> Callable[[Callable[[], bool], float, str], None]:
    """Returns ``wait_for(predicate, timeout, what)``: poll until true, else fail."""
    return _wait_for
