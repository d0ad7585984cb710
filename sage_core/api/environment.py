"""Environments: where a pipeline is built, compiled and run.

``Environment`` holds the logical graph the DSL builds and the runtime settings, and
compiles them with a cluster view and placement policy; subclasses say where the plan
runs. ``LocalEnvironment`` runs it on threads of this process.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

from sage_core.api.datastream import DataStream, _Head
from sage_core.compiler.compile import compile_plan
from sage_core.compiler.placement import ClusterView, PlacementPolicy
from sage_core.compiler.plan import ExecutionPlan, RuntimeSettings
from sage_core.contract import Contract
from sage_core.graph.model import LogicalGraph, Node
from sage_core.graph.refs import operator_ref
from sage_core.runtime.job import JobHandle, JobResult
from sage_core.runtime.local import LocalRuntime

logger = logging.getLogger(__name__)


class Environment:
    """Builds a pipeline and runs it (subclasses choose the runtime).

    Args:
        name: the job name (plan and metrics carry it).
        parallelism: default replicas per operator.
        policy: placement policy instance or scheduler plugin name.
        routers: default routers (``{"default": ..., "keyed": ...}``).
        settings: further RuntimeSettings fields (``buffer_size``, ``linger_ms``,
            ``queue_capacity``, ``max_packets``, ``chaining``, ``trace_every``,
            ``trace_path``, ``dead_letter_sink``, ``dead_letter_config``) and
            the recovery settings ``checkpoint_interval_s`` (None: no
            checkpoints), ``checkpoint_dir`` (path or fsspec URL), ``checkpoints_retained``
            and ``restart`` (``"none"``, ``"fixed(N, DELAY_S)"``,
            ``"exponential(INITIAL_S, MAX_S, ATTEMPTS)"``).
    """

    def __init__(
        self,
        name: str = "job",
        *,
        parallelism: int = 1,
        policy: PlacementPolicy | str | None = None,
        routers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> None:
        self.graph = LogicalGraph(name)
        self.parallelism = parallelism
        self.policy = policy
        self.routers = dict(routers or {})
        self.settings = RuntimeSettings.from_mapping(settings)

    @property
    def name(self) -> str:
        return self.graph.name

    def from_source(
        self,
        source: Any,
        *,
        name: str | None = None,
        parallelism: int | None = None,
        contract: Mapping[str, Any] | Contract | None = None,
        **config: Any,
    ) -> DataStream:
        """A stream read by ``source``: a plugin name (``"jsonl"``, ``"range"`` ...),
        a ``"pkg.mod:attr"`` path, a SourceFunction class or a callable returning an
        iterable (``source(**config)``)."""
        stream = DataStream(self, [])
        node = stream._add(
            "source",
            source,
            inputs=[],
            name=name,
            parallelism=parallelism,
            contract=contract,
            on_error="fail",
            config=config,
        )
        return DataStream(self, [_Head(node)])

    def from_collection(
        self, items: Iterable[Any], *, name: str | None = None, parallelism: int = 1
    ) -> DataStream:
        """A stream of the given items (the ``collection`` source)."""
        data = items if isinstance(items, (list, tuple, range)) else list(items)
        node_name = name or self.graph.unique_name("collection")
        self.graph.add_node(
            Node(
                name=node_name,
                role="source",
                ref=operator_ref("collection"),
                config={"items": data},
                parallelism=parallelism,
            )
        )
        return DataStream(self, [_Head(node_name)])

    def cluster_view(self) -> ClusterView:
        """The workers this environment places replicas on."""
        raise TypeError(f"{type(self).__name__} must implement cluster_view()")

    def compile(self) -> ExecutionPlan:
        """The placed plan of the pipeline built so far.

        Raises:
            GraphError: the pipeline is invalid (every problem listed).
            PlacementError: a replica fits on no worker.
        """
        return compile_plan(
            self.graph,
            self.cluster_view(),
            self.policy,
            self.routers,
            settings=self.settings,
        )

    def submit(self, *, resume: str | None = None) -> JobHandle:
        """Compile and start the pipeline; returns the job handle at once.

        Args:
            resume: a job id: continue that job from its last committed checkpoint
                (the job keeps its id).
        """
        raise TypeError(f"{type(self).__name__} must implement submit()")

    def execute(
        self, timeout: float | None = None, *, resume: str | None = None
    ) -> JobResult:
        """Submit and wait: the result with per-operator metrics and sink results.

        Args:
            timeout: seconds to wait (None: until the job ends).
            resume: a job id whose last committed checkpoint this run continues.

        Raises:
            JobFailed: an operator failed (named, with replica and item).
            CheckpointDirError: the checkpoint directory is unusable.
            CheckpointNotFound: ``resume`` names a job without a usable checkpoint.
        """
        return self.submit(resume=resume).wait(timeout)

    def serve(
        self,
        port: int = 8890,
        *,
        host: str = "127.0.0.1",
        max_in_flight: int = 256,
        deadline_ms: float | None = None,
    ) -> None:
        """Serve the pipeline over HTTP until interrupted: each request posted to
        ``/v1/pipelines/<name>`` is one item (see ``sage_core.serve``); its source
        and sink are replaced by the ``http-request``/``http-response`` operators.

        Raises:
            ServeError: the pipeline cannot be served (the message says why).
        """
        from sage_core.serve import PipelineServer

        server = PipelineServer(
            self, max_in_flight=max_in_flight, deadline_ms=deadline_ms
        )
        server.run(host, port)


def detect_gpus() -> int:
    """Number of NVIDIA GPUs ``nvidia-smi -L`` lists (0 without the tool)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return 0
    try:
        out = subprocess.run(
            [tool, "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("nvidia-smi -L failed (%s); assuming no GPU", exc)
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


class LocalEnvironment(Environment):
    """Runs the pipeline in this process: one thread per replica.

    Args:
        resources: resources this process offers to contracts (``{"GPU": 1}``);
            default: the GPUs ``nvidia-smi`` lists.
        (other arguments: see ``Environment``)
    """

    def __init__(
        self,
        name: str = "job",
        *,
        resources: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.resources = dict(resources) if resources is not None else None
        self.runtime = LocalRuntime()

    def cluster_view(self) -> ClusterView:
        resources = self.resources
        if resources is None:
            gpus = detect_gpus()
            resources = {"GPU": float(gpus)} if gpus else {}
        return ClusterView.local(resources)

    def submit(self, *, resume: str | None = None) -> JobHandle:
        return self.submit_plan(
            self.compile(), job_id=resume, resume=resume is not None
        )

    def submit_plan(
        self, plan: Any, *, job_id: str | None = None, resume: bool = False
    ) -> JobHandle:
        """Run an already compiled plan in this process (``resume``: from job
        ``job_id``'s last committed checkpoint)."""
        return self.runtime.submit(plan, job_id=job_id, resume=resume)
