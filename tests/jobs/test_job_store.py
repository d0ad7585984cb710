"""The job manager's table on disk: one JSON file per job, live jobs reported lost
by the next manager."""

from __future__ import annotations

import json

from sage_core.runtime.jobmanager import JobManager
from sage_core.runtime.jobstore import JobStore, ManagedJob


def _job(id_: str, status: str) -> ManagedJob:
    job = ManagedJob(id=id_, name="p", owner="ann", priority=1, policy=None)
    job.status, job.spec = status, {"name": "p", "operators": []}
    job.log(f"now {status}")
    return job


def test_a_new_manager_reports_live_jobs_lost_and_keeps_ended_ones(tmp_path):
    store = JobStore(tmp_path / "jobs")
    for id_, status in [("a", "queued"), ("b", "running"), ("c", "succeeded")]:
        store.save(_job(id_, status).record())
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == [
        "a.json",
        "b.json",
        "c.json",
    ]  # fmt: skip  (no temporary files left behind)
    manager = JobManager("tcp://127.0.0.1:1", store=JobStore(tmp_path / "jobs"))
    try:
        statuses = {s["job"]: s["status"] for s in manager.summaries()}
        assert statuses == {"a": "lost", "b": "lost", "c": "succeeded"}
        lost = manager.find("b")
        assert "restarted while the job was running" in (lost.error or "")
        assert lost.spec == {"name": "p", "operators": []} and lost.owner == "ann"
        assert manager.logs("b")[-1].endswith(lost.error or "")
        assert manager.stop("b")["status"] == "lost"  # nothing left to stop
    finally:
        manager.close()
    on_disk = json.loads((tmp_path / "jobs" / "b.json").read_text())
    assert on_disk["status"] == "lost"  # a third manager does not re-report it


def test_an_unreadable_job_file_is_skipped(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    store = JobStore(tmp_path)
    store.save(_job("ok", "failed").record())
    assert [r["job"] for r in store.load()] == ["ok"]
