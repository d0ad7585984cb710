"""``JobClient``: submit pipelines to a cluster's job manager and manage them.

Jobs run from the scheduler process (see :mod:`sage_core.runtime.jobmanager`), so
they go on when the process that submitted them exits. ``sage submit`` and ``sage
jobs`` are this class on the command line.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sage_core.common.errors import SageError

#: statuses after which a job does not change any more
TERMINAL = ("succeeded", "failed", "cancelled", "drained", "lost")


class JobError(SageError):
    """The job manager refused a request (unknown job, invalid spec ...)."""


class JobClient:
    """A client of the job manager on the scheduler at ``address``.

    Args:
        address: the scheduler's address (or give ``scheduler_file``).
        scheduler_file: a Dask scheduler file to read the address from.
        security: a ``distributed.security.Security`` for a TLS cluster.
        client: an existing ``distributed.Client`` to use instead (not closed here).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        scheduler_file: str | None = None,
        security: Any = None,
        client: Any = None,
    ) -> None:
        from sage_core.api.dask_environment import connect_client
        from sage_core.runtime.scheduler_ext import install_on

        self._own = client is None
        self.client = client or connect_client(address, scheduler_file, security)
        # a plain `dask scheduler` without SAGE's preload gets the manager now
        self.client.run_on_scheduler(install_on)

    def _call(self, handler: str, **kwargs: Any) -> Any:
        client = self.client
        reply = client.sync(getattr(client.scheduler, handler), **kwargs)
        if isinstance(reply, dict) and "error" in reply:
            raise JobError(reply["error"])
        return reply["ok"] if isinstance(reply, dict) and "ok" in reply else reply

    def submit(
        self,
        spec: str | Path | Mapping[str, Any],
        *,
        owner: str = "",
        priority: int = 0,
        policy: str | None = None,
    ) -> str:
        """Start the pipeline ``spec`` (a YAML/JSON file or a mapping); its id.

        Relative paths in a spec file are resolved from the file's directory on the
        scheduler's machine (share the files, or use absolute paths).

        Raises:
            JobError: the spec is invalid (every problem listed).
        """
        from sage_core.graph.spec import read_spec_file

        base_dir = None
        if not isinstance(spec, Mapping):
            base_dir = str(Path(spec).resolve().parent)
            spec = read_spec_file(spec)
        job = self._call(
            "sage_manager_submit",
            spec=json.dumps(dict(spec)),  # JSON: Dask's msgpack turns lists into tuples
            base_dir=base_dir,
            owner=owner,
            priority=priority,
            policy=policy,
        )
        return str(job["job"])

    def list(self) -> list[dict[str, Any]]:
        """Every job of the manager (id, name, owner, priority, status ...)."""
        return list(self._call("sage_manager_jobs"))

    def status(self, job: str) -> dict[str, Any]:
        """One job's summary (an unambiguous id prefix will do)."""
        return dict(self._call("sage_manager_job", job=job))

    def stop(self, job: str, *, drain: bool = False) -> dict[str, Any]:
        """Cancel a job: its replicas stop promptly. With ``drain`` its sources stop
        emitting instead, the items in flight finish and reach the sinks, and the job
        ends ``drained`` with its results."""
        return dict(self._call("sage_manager_stop", job=job, drain=drain))

    def scale(self, job: str, operator: str, replicas: int) -> dict[str, Any]:
        """Run ``operator`` of a running job on ``replicas`` replicas from now on,
        in place (a stateless map, filter or flat_map; see ``JobHandle.scale``);
        ``{"job", "operator", "replicas", "changed": [replica ids]}``.

        Raises:
            JobError: no such job, it is not running, or the operator cannot change
                in place (the message says why).
        """
        return dict(
            self._call(
                "sage_manager_scale", job_id=job, operator=operator, replicas=replicas
            )
        )

    def logs(self, job: str) -> builtins.list[str]:
        """What happened to the job (submitted, placed, running, ended, errors)."""
        return list(self._call("sage_manager_logs", job=job))

    def admission(self, policy: str | None = None, **options: Any) -> dict[str, Any]:
        """Set the cluster's admission policy (``immediate``, ``staggered``
        (``delta_s``), ``utilisation`` (``rho``, ``max_running``), ``fair-share``
        (``slots``) or a plugin's); without ``policy``, read it.

        Raises:
            JobError: unknown policy or bad options.
        """
        return dict(self._call("sage_manager_admission", name=policy, options=options))

    def wait(self, job: str, timeout: float | None = None) -> dict[str, Any]:
        """Poll until the job has ended; its summary.

        Raises:
            TimeoutError: it is still running after ``timeout`` seconds.
        """
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.status(job)
            if info["status"] in TERMINAL:
                return info
            if end is not None and time.monotonic() > end:
                raise TimeoutError(
                    f"job {job} still {info['status']} after {timeout} s"
                )
            time.sleep(0.2)

    def close(self) -> None:
        if self._own:
            self.client.close()

    def __enter__(self) -> JobClient:  # noqa: PYI034 - py3.10
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
