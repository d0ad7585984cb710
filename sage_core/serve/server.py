"""``PipelineServer``: a pipeline running as a long-lived job behind HTTP routes.

``start()`` registers a :class:`RequestHub`, rewrites the pipeline with
:func:`served_graph`, compiles it with the environment's cluster view, policy and
routers (``buffer_size=1``: a request leaves the source at once; batching operators
still batch across the packets queued before them) and submits it to the
environment's runtime: the embedded one, or a Dask cluster, whose replicas reach the
hub through a :class:`~sage_core.serve.remote.HubServer` of this process. ``stop(drain=True)`` closes the hub: the source ends, the requests in flight
finish, then the job ends. ``run(host, port)`` serves until interrupted;
``serve_in_thread(host, port)`` serves from a background thread (tests, notebooks).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sage_core.compiler.compile import compile_plan
from sage_core.compiler.rescale import RescaleError
from sage_core.graph.model import LogicalGraph
from sage_core.runtime.job import JobFailed
from sage_core.runtime.local import LocalRuntime
from sage_core.serve.autoscale import Autoscaler, Demand, ScaleRange
from sage_core.serve.envelope import ServeError, served_graph
from sage_core.serve.hub import RequestHub
from sage_core.serve.remote import HubServer

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from sage_core.api.environment import Environment

logger = logging.getLogger(__name__)


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _facing_ip(client: Any) -> str:
    """This host's address on the route to the client's scheduler (the workers
    reach it the same way, as they reach the scheduler)."""
    from distributed.comm.addressing import get_address_host
    from distributed.utils import get_ip

    host = get_address_host(client.scheduler.address)
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    return str(get_ip(host))


def _scaler(
    env: Environment,
    autoscale: Mapping[str, ScaleRange | tuple[int, int]] | None,
    target_depth: float,
) -> Autoscaler | None:
    """The autoscaler of ``env``'s pipeline, checking every named operator can
    scale: a map/filter/flat_map whose inputs are not keyed."""
    if not autoscale:
        return None
    ranges = {
        op: r if isinstance(r, ScaleRange) else ScaleRange(*r)
        for op, r in autoscale.items()
    }
    graph = env.graph
    keyed = {e.dst for e in graph.edges if e.key is not None}
    for op in ranges:
        node = graph.nodes.get(op)
        if node is None:
            raise ServeError(
                f"autoscale: no operator {op!r}; operators: {', '.join(graph.nodes)}"
            )
        if node.role in ("source", "sink") or op in keyed:
            raise ServeError(
                f"autoscale: {op!r} cannot scale: only operators between the request "
                f"and the response without keyed inputs do"
            )
    return Autoscaler(ranges, target_depth=target_depth)


class PipelineServer:
    """Serves one pipeline over HTTP (see :mod:`sage_core.serve.app`).

    Args:
        env: the environment the pipeline was built in: a ``LocalEnvironment``
            (replicas in this process) or a ``DaskEnvironment`` (replicas on its
            cluster; the workers must reach this process's address).
        max_in_flight: requests admitted and not yet answered, at most (429 beyond).
        deadline_ms: the deadline of requests without ``X-SLO-Deadline-Ms``
            (None: no deadline).
        autoscale: operators whose replicas follow their queue depth, the hub's
            backlog and the demand, with their ``(min, max)`` replicas (see
            :mod:`sage_core.serve.autoscale`).
        scale_interval_s: seconds between the autoscaler's samples.
        target_depth: packets waiting per replica above which an operator grows;
            an autoscaled operator's input queue holds twice as many (unless its
            contract sets ``queue_capacity``): requests beyond it wait at the hub.

    Raises:
        ServeError: the environment is neither (or ``max_in_flight`` < 1).
    """

    def __init__(
        self,
        env: Environment,
        *,
        max_in_flight: int = 256,
        deadline_ms: float | None = None,
        autoscale: Mapping[str, ScaleRange | tuple[int, int]] | None = None,
        scale_interval_s: float = 1.0,
        target_depth: float = 2.0,
    ) -> None:
        runtime = getattr(env, "runtime", None)
        if not hasattr(env, "submit_plan"):
            raise ServeError(
                f"{type(env).__name__} pipelines cannot be served: build the "
                f"pipeline in a LocalEnvironment or a DaskEnvironment"
            )
        if max_in_flight < 1:
            raise ServeError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.env = env
        self.runtime = runtime if isinstance(runtime, LocalRuntime) else None
        self._hub_server: HubServer | None = None
        self.name = env.name
        self.max_in_flight = max_in_flight
        self.default_deadline_s = deadline_ms / 1000.0 if deadline_ms else None
        self.hub: RequestHub | None = None
        self.job: Any = None  # LocalJob or DaskJob of the current generation
        self.generation = 0
        self.parallelism = {n.name: n.parallelism for n in env.graph.nodes.values()}
        self.scaler = _scaler(env, autoscale, target_depth)
        #: the input queue of an autoscaled operator's replicas (unless its
        #: contract names one): twice the target depth, so the depth signal can
        #: pass the target while the backlog waits at the hub
        self.scaled_queue_capacity = max(2, math.ceil(2 * target_depth))
        # a Dask job's replica metrics change every metrics_interval_s only
        self.scale_interval_s = (
            scale_interval_s
            if self.runtime is not None
            else max(scale_interval_s, env.settings.metrics_interval_s)
        )
        self._stopping = threading.Event()
        self._roll_lock = threading.Lock()
        #: why the pipeline stopped on its own (an operator failed to open ...)
        self.failure: str | None = None
        #: every change of replicas: operator, from, to, how ("in place" with the
        #: replicas added or retired, or "rolled" with why), when
        self.changes: list[dict[str, Any]] = []

    def start(self) -> None:
        """Start the pipeline's job (idempotent)."""
        if self.job is not None:
            return
        hub = RequestHub(self.name, max_in_flight=self.max_in_flight).register()
        self._locator = hub.id
        if self.runtime is None:  # replicas on a cluster: they call back here
            client = self.env.client  # type: ignore[attr-defined]
            self._hub_server = HubServer(hub, _facing_ip(client))
            self._locator = self._hub_server.locator
        self.hub = hub
        self._launch()
        if self.scaler is not None:
            threading.Thread(
                target=self._autoscale, name=f"sage-scale-{self.name}", daemon=True
            ).start()

    def _launch(self) -> None:
        """Compile and submit the pipeline at ``self.parallelism`` as job
        ``self.generation`` on the hub; older generations' sources stop."""
        env = self.env
        graph = LogicalGraph(env.graph.name)
        scaled = self.scaler.ranges if self.scaler is not None else {}
        for node in env.graph.nodes.values():
            contract = dict(node.contract)
            if node.name in scaled:
                # requests beyond a short queue wait at the hub, where a rolled
                # job's new replicas take them, not in the old replicas' queues
                contract.setdefault("queue_capacity", self.scaled_queue_capacity)
            graph.add_node(
                replace(
                    node, parallelism=self.parallelism[node.name], contract=contract
                )
            )
        graph.edges = list(env.graph.edges)
        plan = compile_plan(
            served_graph(graph, hub=self._locator, generation=self.generation),
            env.cluster_view(),
            env.policy,
            env.routers,
            # an autoscaled operator keeps a queue of its own (chained into its
            # upstream it would have none to read the depth of)
            settings=replace(
                env.settings,
                buffer_size=1,
                chaining=env.settings.chaining and self.scaler is None,
            ),
        )
        job = env.submit_plan(plan)
        assert self.hub is not None
        self.hub.retire_before(self.generation)
        self.job = job
        threading.Thread(
            target=self._watch, args=(job, self.generation),
            name=f"sage-serve-{self.name}-{self.generation}", daemon=True,
        ).start()  # fmt: skip

    def _watch(self, job: Any, generation: int) -> None:
        hub = self.hub
        assert hub is not None
        try:
            job.wait()
        except JobFailed as exc:
            if generation == self.generation:
                self.failure = f"the pipeline failed: {exc}"
            logger.error("served pipeline %r failed: %s", self.name, exc)
        if generation != self.generation:
            return  # a rolled job that finished its requests
        if not hub.closed:
            self.failure = self.failure or "the pipeline ended"
        hub.close()

    def _autoscale(self) -> None:
        scaler = self.scaler
        assert scaler is not None
        while not self._stopping.wait(self.scale_interval_s):
            job = self.job
            if job is None or job.done():
                continue
            try:
                replicas = job.metrics().get("replicas", {})
            except Exception as exc:  # noqa: BLE001 - a job between states
                logger.debug("autoscaler: no metrics now (%r)", exc)
                continue
            hub = self.hub
            demand = Demand(hub.arrived, hub.waiting) if hub is not None else None
            changes = scaler.observe(self.parallelism, replicas, demand)
            if changes:
                self.rescale(changes)

    def rescale(self, parallelism: Mapping[str, int]) -> None:
        """Run the operators at ``parallelism`` (by name) from now on.

        An operator that can change in place (``compiler.rescale``: a stateless
        map, filter or flat_map) gains or loses replicas while the others keep
        running, engines loaded by other operators included. Otherwise a new job
        takes over the request hub and the current one finishes what it holds
        (a roll). Each change is recorded in ``changes`` with how it was made.
        """
        unknown = sorted(set(parallelism) - set(self.parallelism))
        if unknown:
            raise ServeError(f"no operator(s) {unknown} in {self.name!r}")
        with self._roll_lock:
            if self._stopping.is_set() or self.hub is None or self.hub.closed:
                return
            roll = False
            for op, n in parallelism.items():
                before = self.parallelism[op]
                if n == before:
                    continue
                change = {"at": time.time(), "operator": op, "from": before, "to": n}
                try:
                    assert self.job is not None
                    change["replicas"] = self.job.scale(op, n)
                    change["how"] = "in place"
                except RescaleError as exc:
                    roll = True
                    change["how"], change["why"] = "rolled", str(exc)
                self.changes.append(change)
                self.parallelism[op] = n
                logger.info(
                    "served pipeline %r: %s %d -> %d replicas (%s)",
                    self.name, op, before, n, change["how"],
                )  # fmt: skip
            if roll:
                self.generation += 1
                self._launch()

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop serving: with ``drain`` the requests in flight are answered first."""
        self._stopping.set()
        with self._roll_lock:
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
        if self._hub_server is not None:
            self._hub_server.close()

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
