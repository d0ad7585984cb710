"""DaskEnvironment: the same pipeline, run as actors on a Dask cluster.

Without an address it starts an in-process ``LocalCluster`` (the embedded default:
workers are threads of this process, with SAGE's dashboard page); with
``address="tcp://host:8786"`` or ``scheduler_file=...`` it connects to a cluster
started by ``sage scheduler`` / ``sage worker`` (``security=`` a Dask ``Security`` for
a ``tls://`` cluster); ``client=`` reuses a Client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sage_core.api.environment import Environment
from sage_core.common.errors import ClusterSecurityError
from sage_core.compiler.compile import compile_plan, resolve_policy
from sage_core.compiler.placement import ClusterView, PlacementError, PlacementPolicy
from sage_core.compiler.plan import ExecutionPlan
from sage_core.graph.model import GraphError
from sage_core.runtime.cluster_view import cluster_view
from sage_core.runtime.job import JobHandle
from sage_core.runtime.master import DaskJob, DaskRuntime

logger = logging.getLogger(__name__)

ROUTES_MODULE = "sage_core.observe.routes"
DEFAULT_POLICY = "load-aware-spread"


class DaskEnvironment(Environment):
    """Runs the pipeline's replicas as Dask actors.

    Args:
        name: the job name.
        address: scheduler address (``"tcp://127.0.0.1:8786"``); None with no
            ``scheduler_file`` and no ``client`` starts an in-process LocalCluster.
        scheduler_file: a Dask scheduler file to read the address from.
        client: an existing ``distributed.Client`` to use (not closed by ``close``).
        security: a ``distributed.security.Security`` with the client's TLS
            certificate, CA and key, for a cluster started with ``--tls-*`` options
            (``tls://`` address); None uses Dask's config.
        n_workers: workers of the embedded cluster.
        threads_per_worker: threads of each embedded worker.
        worker_resources: resources of each embedded worker, by index
            (``{1: {"GPU": 1}}``).
        policy: placement policy name or instance (default ``load-aware-spread``).
        priority: the job's priority (read by the ``priority`` policy).
        (other arguments: see ``Environment``)
    """

    def __init__(
        self,
        name: str = "job",
        *,
        address: str | None = None,
        scheduler_file: str | None = None,
        client: Any = None,
        security: Any = None,
        n_workers: int = 2,
        threads_per_worker: int = 1,
        worker_resources: Mapping[int, Mapping[str, float]] | None = None,
        policy: PlacementPolicy | str | None = DEFAULT_POLICY,
        priority: int = 0,
        **kwargs: Any,
    ) -> None:
        if isinstance(policy, str) and policy != "local":
            policy = resolve_policy(policy, priority=priority)
        super().__init__(name, policy=policy, **kwargs)
        self.address, self.scheduler_file = address, scheduler_file
        self.security = security
        self.priority = priority
        self._client = client
        self._own_client = client is None
        self._cluster: Any = None
        self._embedded: dict[str, Any] = {
            "n_workers": n_workers,
            "threads_per_worker": threads_per_worker,
            "worker_resources": dict(worker_resources or {}),
        }

    @property
    def client(self) -> Any:
        """The Dask client (connects, or starts the embedded cluster, on first use)."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        import dask
        from distributed import Client

        if self.address or self.scheduler_file:
            return connect_client(self.address, self.scheduler_file, self.security)
        routes = list(dask.config.get("distributed.scheduler.http.routes"))
        if ROUTES_MODULE not in routes:
            routes.append(ROUTES_MODULE)
        with dask.config.set(
            {
                "distributed.scheduler.http.routes": routes,
                "distributed.worker.profile.enabled": False,
            }
        ):
            self._cluster = _embedded_cluster(**self._embedded)
        client = Client(self._cluster)
        # workers may still be registering when the cluster's constructor returns;
        # placing against a partial view would crowd the replicas on the first ones
        client.wait_for_workers(self._embedded["n_workers"], timeout=60)
        return client

    @property
    def dashboard_link(self) -> str:
        return str(self.client.dashboard_link)

    def cluster_view(self) -> ClusterView:
        return cluster_view(self.client)

    def compile(self) -> ExecutionPlan:
        """The plan placed on this cluster.

        Raises:
            GraphError: the pipeline is invalid.
            PlacementError: a contract no worker can satisfy (names the resource
                and every worker seen with what it offers).
        """
        view = self.cluster_view()
        try:
            return compile_plan(
                self.graph, view, self.policy, self.routers, settings=self.settings
            )
        except GraphError as exc:
            placement = [p for p in exc.problems if p.where.endswith(".contract")]
            if not placement or len(placement) < len(exc.problems):
                raise
            seen = "; ".join(
                f"{w.name} ({w.address}): threads={w.threads}, "
                f"resources={dict(w.resources) or 'none'}"
                for w in view.workers
            )
            raise PlacementError(
                "no worker can host: "
                + "; ".join(f"{p.where}: {p.message}" for p in placement)
                + f". Workers seen: {seen or 'none'}"
            ) from exc

    def submit(self, *, resume: str | None = None) -> JobHandle:
        return self.submit_plan(
            self.compile(), job_id=resume, resume=resume is not None
        )

    def submit_plan(
        self, plan: Any, *, job_id: str | None = None, resume: bool = False
    ) -> DaskJob:
        """Run an already compiled (and placed) plan on this cluster (``resume``:
        from job ``job_id``'s last committed checkpoint)."""
        return DaskRuntime(self.client).submit(
            plan, job_id=job_id, priority=self.priority, resume=resume
        )

    def close(self) -> None:
        """Close the client and the embedded cluster this environment started."""
        if self._client is not None and self._own_client:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> DaskEnvironment:  # noqa: PYI034 - final class
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scheduler_address(address: str | None, scheduler_file: str | None) -> str:
    if address or not scheduler_file:
        return address or ""
    try:
        return str(json.loads(Path(scheduler_file).read_text())["address"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # Dask's Client reports an unreadable file itself


def connect_client(
    address: str | None,
    scheduler_file: str | None,
    security: Any = None,
    *,
    timeout: str = "30s",
) -> Any:
    """A ``distributed.Client`` of a running cluster.

    Args:
        address: the scheduler's address (``tcp://...`` or ``tls://...``).
        scheduler_file: a Dask scheduler file to read the address from instead.
        security: a ``distributed.security.Security`` for a TLS cluster; None uses
            Dask's config.
        timeout: how long to try to connect.

    Raises:
        ClusterSecurityError: the scheduler speaks TLS and neither ``security`` nor
            Dask's config gives the client a certificate.
    """
    import dask
    from distributed import Client

    target = _scheduler_address(address, scheduler_file)
    configured = dask.config.get("distributed.comm.tls.client.cert", None)
    if target.startswith("tls://") and security is None and not configured:
        raise ClusterSecurityError(
            f"the scheduler at {target} speaks TLS: pass security="
            f"Security(tls_ca_file=..., tls_client_cert=..., tls_client_key=...) "
            f"(distributed.security), or --tls-ca-file/--tls-cert/--tls-key to "
            f"`sage run`"
        )
    return Client(
        address, scheduler_file=scheduler_file, security=security, timeout=timeout
    )


def _embedded_cluster(
    *,
    n_workers: int,
    threads_per_worker: int,
    worker_resources: Mapping[int, Mapping[str, float]],
) -> Any:
    """An in-process cluster (workers are threads of this process)."""
    from distributed import LocalCluster, Scheduler, Worker
    from distributed.deploy.spec import SpecCluster

    if not worker_resources:
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=False,
            dashboard_address=":0",
        )
    workers = {
        i: {
            "cls": Worker,
            "options": {
                "nthreads": threads_per_worker,
                "resources": dict(worker_resources.get(i, {})),
                "name": i,
            },
        }
        for i in range(n_workers)
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    return SpecCluster(workers=workers, scheduler=scheduler)
