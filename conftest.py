"""Shared test fixtures: plugin registration, in-process Dask clusters, subprocesses."""

from __future__ import annotations

import json
import os
import signal
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


@pytest.fixture(scope="session")
def dashboard_get() -> Callable[[Any, str], Any]:
    """``dashboard_get(dask_server, path)``: GET ``path`` from SAGE's dashboard routes
    mounted on a bare tornado server for ``dask_server`` (a scheduler, or None)."""
    import asyncio

    import tornado.httpclient
    import tornado.httpserver
    import tornado.testing
    import tornado.web

    from sage_core.observe.dashboard import ROUTES

    async def fetch(server: Any, path: str) -> Any:
        routes = [(p, h, {"dask_server": server}) for p, h in ROUTES]
        sock, port = tornado.testing.bind_unused_port()
        http = tornado.httpserver.HTTPServer(tornado.web.Application(routes))
        http.add_sockets([sock])
        client = tornado.httpclient.AsyncHTTPClient()
        try:
            url = f"http://127.0.0.1:{port}{path}"
            return await client.fetch(url, raise_error=False)
        finally:
            http.stop()
            await http.close_all_connections()

    return lambda server, path: asyncio.run(fetch(server, path))


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


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Returns a function giving a TCP port on 127.0.0.1 that was free a moment ago."""
    return double.free_port  # the EngineDouble module's, one helper for all


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


@pytest.fixture(scope="session")
def process_group() -> type[ProcessGroup]:
    """The ``ProcessGroup`` class, for fixtures wider than one test (call ``stop_all``)."""
    return ProcessGroup


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


def _load_engine_double() -> Any:
    """tests/llm/engine_double.py as module ``sage_tests_engine_double`` (tests are
    not a package): one module object that every test directory imports by name."""
    import importlib.util

    name = "sage_tests_engine_double"
    if name not in sys.modules:
        path = ROOT / "tests" / "llm" / "engine_double.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


double = _load_engine_double()


@pytest.fixture
def engine_double() -> Iterator[Callable[..., Any]]:
    """``engine_double(model, kind="llm", **state)`` serves an OpenAI-compatible test
    double (tests/llm/engine_double.py) on 127.0.0.1, stopped after the test."""
    started: list[Any] = []

    def start(model: str, kind: str = "llm", **state: Any) -> Any:
        engine = double.EngineDouble(model, kind, **state).start()
        started.append(engine)
        return engine

    try:
        yield start
    finally:
        for engine in started:
            engine.stop()


@pytest.fixture
def sage_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``SAGE_HOME`` (data, state, cache) for one test."""
    home = tmp_path / "sage-home"
    monkeypatch.setenv("SAGE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def sage_cli() -> Any:
    """The ``sage`` click group with the commands plugins add, as ``main()`` builds
    it (``sage demo``, ``sage engine start`` ...)."""
    from sage_core.cli import cli
    from sage_core.plugins import load_plugins, pm

    load_plugins()
    pm.hook.register_commands(cli=cli)
    return cli


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture(scope="session")
def wait_for() -> Callable[[Callable[[], bool], float, str], None]:
    """Returns ``wait_for(predicate, timeout, what)``: poll until true, else fail."""
    return _wait_for


@pytest.fixture(scope="session")
def start_scheduler(
    sage_cmd: list[str], free_port: Callable[[], int]
) -> Callable[..., tuple[Any, str]]:
    """Returns ``start_scheduler(group, cwd, *extra, dashboard=None)``: a real ``sage
    scheduler`` on 127.0.0.1 (random port, a free or given dashboard port, a scheduler
    file in ``cwd``),
    started in process ``group`` with ``extra`` options; gives (process, address)
    once the scheduler file is written."""

    def start(
        group: Any, cwd: Path, *extra: str, dashboard: int | None = None
    ) -> tuple[Any, str]:
        scheduler_file = cwd / "scheduler.json"
        argv = [*sage_cmd, "scheduler", "--host", "127.0.0.1", "--port", "0"]
        argv += ["--dashboard-address", f"127.0.0.1:{dashboard or free_port()}"]
        argv += ["--scheduler-file", str(scheduler_file), *extra]
        proc = group.start(argv, "scheduler", cwd=cwd)
        _wait_for(scheduler_file.exists, 60, "the scheduler file")
        return proc, json.loads(scheduler_file.read_text())["address"]

    return start


# -- inference: the tiny local model and real vLLM servers --------------------------


def require_inference(module: str, what: str) -> None:
    """Skip (or, with ``SAGE_REQUIRE_INFERENCE=1`` as in ``nox -s tests-inference``,
    fail) when ``module`` is not importable."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return
    message = (
        f"{what} is not installed in {sys.executable}; run `nox -s tests-inference` "
        f"(see requirements/inference.lock.txt)"
    )
    if os.environ.get("SAGE_REQUIRE_INFERENCE") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def needs_inference() -> Callable[[str, str], None]:
    """``needs_inference(module, what)``: skip, or fail in the inference session,
    when ``module`` is missing (see ``require_inference``)."""
    return require_inference


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the tiny random-weight Llama (``sage engine make-tiny-model``),
    made once per session; ``$SAGE_TINY_MODEL_DIR`` names a reusable location."""
    require_inference("transformers", "transformers (for the tiny model)")
    from sage_plugins.engines.tiny_model import make_tiny_model

    where = os.environ.get("SAGE_TINY_MODEL_DIR")
    target = Path(where) if where else tmp_path_factory.mktemp("models") / "tiny"
    return make_tiny_model(target)


@pytest.fixture(scope="session")
def vllm_servers(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Any]]:
    """Factory of real vLLM OpenAI servers on 127.0.0.1, stopped at session end.

    ``vllm_servers(key="default", model=None, served_model_name="tiny", wait=True,
    **kwargs)`` returns a started ``sage_plugins.engines.vllm_server.VLLMServer`` serving the
    tiny model unless ``model`` is given (``kwargs`` go to ``VLLMServer``). Calls with
    the same ``key`` share one server (start-up takes 40 s to minutes); use distinct
    keys for distinct servers, e.g. ``vllm_servers("a")`` and ``vllm_servers("b")``.
    With ``wait=False`` the caller waits: ``server.wait_healthy(timeout_s)``.
    """
    require_inference("vllm", "vLLM")
    from sage_plugins.engines.vllm_server import VLLMServer

    servers: dict[str, Any] = {}
    logs = tmp_path_factory.mktemp("vllm-logs")

    def start(
        key: str = "default",
        model: str | Path | None = None,
        served_model_name: str = "tiny",
        wait: bool = True,
        **kwargs: Any,
    ) -> Any:
        server = servers.get(key)
        if server is None:
            server = VLLMServer(
                model or tiny_model,
                served_model_name=served_model_name,
                log_path=logs / f"{key}.log",
                **kwargs,
            )
            servers[key] = server
            server.start(wait=False)
        if wait:
            server.wait_healthy(server.startup_timeout_s)
        return server

    try:
        yield start
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def vllm_server(vllm_servers: Callable[..., Any]) -> Any:
    """The session's shared vLLM server serving the tiny model as ``"tiny"``."""
    return vllm_servers()
