"""The scheduler-side record of SAGE jobs: what runs where, live metrics, outcomes.

One ``JobBoard`` lives in the scheduler process (kept by the ``sage-jobs`` scheduler
plugin). Job masters post a job when they submit it and update it about once a
second (status, per-replica metrics snapshots); the board answers with the workers
that left the cluster so a master can fail a job whose replica was lost. The
dashboard page, the Prometheus collector and ``sage explain --address`` read it;
placement reads ``resident()`` so that running jobs' replicas count.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

#: finished jobs kept for the dashboard and ``sage explain``
KEEP_FINISHED = 200
#: name of the scheduler plugin that keeps the board
BOARD_PLUGIN = "sage-jobs"


def board_of(server: Any) -> JobBoard | None:
    """The job board of a scheduler (None where SAGE's plugin is not loaded)."""
    plugin = getattr(server, "plugins", {}).get(BOARD_PLUGIN)
    return getattr(plugin, "board", None)


class JobBoard:
    """Jobs by id (insertion order) and the workers the scheduler has lost."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lost_workers: dict[str, float] = {}

    def submit(self, record: Mapping[str, Any]) -> None:
        """Add a job: ``job``, ``name``, ``policy``, ``priority``, ``plan`` (dict),
        ``placement`` (replica -> {worker, cpu, resources})."""
        job = dict(record)
        job.setdefault("status", "running")
        job.setdefault("submitted", time.time())
        job.setdefault("replicas", {})
        job.setdefault("error", None)
        job["updated"] = time.time()
        self.jobs[job["job"]] = job
        self._trim()

    def update(
        self,
        job_id: str,
        *,
        status: str | None = None,
        replicas: Mapping[str, Any] | None = None,
        error: str | None = None,
        checkpoints: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Record progress (and checkpoint/restart counters); returns the lost
        workers that host replicas of the job."""
        job = self.jobs.get(job_id)
        if job is None:
            return []
        if status is not None:
            job["status"] = status
            if status not in ("running", "created"):
                job.setdefault("finished", time.time())
        if replicas:
            now = time.time()
            for rid, snap in replicas.items():
                snap = dict(snap)
                prior = job["replicas"].get(rid)
                count = snap.get("items_in") or snap.get("items_out", 0)
                if prior is not None and now > prior.get("_at", now):
                    before = prior.get("items_in") or prior.get("items_out", 0)
                    snap["items_per_s"] = (count - before) / (now - prior["_at"])
                else:
                    snap["items_per_s"] = 0.0
                snap["_at"] = now
                job["replicas"][rid] = snap
        if error is not None:
            job["error"] = error
        if checkpoints is not None:
            job["checkpoints"] = dict(checkpoints)
        job["updated"] = time.time()
        hosts = {p["worker"] for p in job.get("placement", {}).values()}
        return sorted(hosts & set(self.lost_workers))

    def worker_lost(self, address: str) -> None:
        self.lost_workers[address] = time.time()

    def worker_added(self, address: str) -> None:
        self.lost_workers.pop(address, None)

    def running(self) -> list[dict[str, Any]]:
        return [j for j in self.jobs.values() if j["status"] == "running"]

    def resident(self) -> dict[str, list[dict[str, Any]]]:
        """Replicas of running jobs by worker address: ``{replica, job, priority,
        cpu, resources}`` each."""
        out: dict[str, list[dict[str, Any]]] = {}
        for job in self.running():
            for rid, p in job.get("placement", {}).items():
                out.setdefault(p["worker"], []).append(
                    {
                        "replica": f"{job['job']}/{rid}",
                        "job": job["job"],
                        "priority": job.get("priority", 0),
                        "cpu": p.get("cpu", 0.0),
                        "resources": dict(p.get("resources", {})),
                    }
                )
        return out

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A job by id, or by unique prefix."""
        if job_id in self.jobs:
            return self.jobs[job_id]
        hits = [j for k, j in self.jobs.items() if k.startswith(job_id)]
        return hits[0] if len(hits) == 1 else None

    def _trim(self) -> None:
        finished = [k for k, j in self.jobs.items() if j["status"] != "running"]
        for k in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.jobs[k]
