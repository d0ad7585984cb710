"""``PipelineServer``: a pipeline running as a long-lived job behind HTTP routes.

``start()`` registers a :class:`RequestHub`, rewrites the pipeline with
:func:`served_graph`, compiles it with the environment's cluster view, policy and
routers (``buffer_size=1``: a request leaves the source at once; batching operators
still batch across the packets queued before them) and submits it to the embedded
runtime. ``stop(drain=True)`` closes the hub: the source ends, the requests in flight
finish, then the job ends. ``run(host, port)`` serves until interrupted;
``serve_in_thread(host, port)`` serves from a background thread (tests, notebooks).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sage_core.compiler.compile import compile_plan
from sage_core.runtime.job import JobFailed
from sage_core.runtime.local import LocalJob, LocalRuntime
from sage_core.serve.envelope import ServeError, served_graph
from sage_core.serve.hub import RequestHub

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from sage_core.api.environment import Environment

logger = logging.getLogger(__name__)


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


class PipelineServer:
    """Serves one pipeline over HTTP (see :mod:`sage_core.serve.app`).

    Args:
        env: the environment the pipeline was built in (embedded runtime).
        max_in_flight: requests admitted and not yet answered, at most (429 beyond).
        deadline_ms: the deadline of requests without ``X-SLO-Deadline-Ms``
            (None: no deadline).

    Raises:
        ServeError: the environment does not run on the embedded runtime.
    """

    def __init__(
        self,
        env: Environment,
        *,
        max_in_flight: int = 256,
        deadline_ms: float | None = None,
    ) -> None:
        runtime = getattr(env, "runtime", None)
        if not isinstance(runtime, LocalRuntime):
            raise ServeError(
                f"{type(env).__name__} pipelines cannot be served yet: serve a "
                f"pipeline built in LocalEnvironment (sage serve without --address)"
            )
        if max_in_flight < 1:
            raise ServeError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.env, self.runtime = env, runtime
        self.name = env.name
        self.max_in_flight = max_in_flight
        self.default_deadline_s = deadline_ms / 1000.0 if deadline_ms else None
        self.hub: RequestHub | None = None
        self.job: LocalJob | None = None
        #: why the pipeline stopped on its own (an operator failed to open ...)
        self.failure: str | None = None

    def start(self) -> None:
        """Start the pipeline's job (idempotent)."""
        if self.job is not None:
            return
        env = self.env
        hub = RequestHub(self.name, max_in_flight=self.max_in_flight).register()
        graph = served_graph(env.graph, hub=hub.id)
        plan = compile_plan(
            graph,
            env.cluster_view(),
            env.policy,
            env.routers,
            settings=replace(env.settings, buffer_size=1),
        )
        self.hub = hub
        self.job = self.runtime.submit(plan)
        threading.Thread(
            target=self._watch, name=f"sage-serve-{self.name}", daemon=True
        ).start()

    def _watch(self) -> None:
        job, hub = self.job, self.hub
        assert job is not None and hub is not None
        try:
            job.wait()
        except JobFailed as exc:
            self.failure = f"the pipeline failed: {exc}"
            logger.error("served pipeline %r failed: %s", self.name, exc)
        if not hub.closed:
            self.failure = self.failure or "the pipeline ended"
        hub.close()

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop serving: with ``drain`` the requests in flight are answered first."""
        hub, job = self.hub, self.job
        if hub is None or job is None:
            return
        hub.close()
        if drain:
            with contextlib.suppress(JobFailed, TimeoutError):
                job.wait(timeout)
        if not job.done():
            job.cancel()
        hub.unregister()

    def app(self) -> Starlette:
        from sage_core.serve.app import create_app

        return create_app(self)

    def run(self, host: str = "127.0.0.1", port: int = 8890, **uvicorn: Any) -> None:
        """Start the pipeline and serve HTTP until interrupted (SIGINT/SIGTERM: the
        requests in flight are answered, then it returns)."""
        import uvicorn as _uvicorn

        self.start()
        if threading.current_thread() is threading.main_thread():
            # uvicorn re-raises the signal it shut down on: end with a clean exit
            signal.signal(signal.SIGTERM, _exit_cleanly)
        try:
            _uvicorn.run(self.app(), host=host, port=port, **uvicorn)
        finally:
            self.stop()

    @contextlib.contextmanager
    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve from a background thread; yields the base URL (``port=0``: any
        free port), stops (draining) on exit."""
        import uvicorn as _uvicorn

        self.start()
        config = _uvicorn.Config(
            self.app(), host=host, port=port, log_level="warning", lifespan="off"
        )
        server = _uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                if not thread.is_alive():
                    raise ServeError(f"the HTTP server did not start on {host}:{port}")
                threading.Event().wait(0.01)
            bound = server.servers[0].sockets[0].getsockname()[1]
            yield f"http://{host}:{bound}"
        finally:
            server.should_exit = True
            thread.join(10)
            self.stop()
