"""Jobs that end cleanly on request (``sage jobs stop --drain``) and jobs that a
scheduler restart interrupts (reported ``lost``, never silently forgotten), on plain
``dask`` processes with SAGE's preload."""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_a_drained_job_stops_its_sources_and_delivers_what_was_in_flight(
    plain_dask, job_spec, sage_run, until_status, tmp_path
):
    from sage_core import JobClient

    out = tmp_path / "drained.jsonl"
    spec = job_spec(tmp_path / "long.yaml", "long", 10**6, out)
    with JobClient(plain_dask) as jc:
        job = jc.submit(spec, owner="dora")
        until_status(jc, job, "running")
        while not out.exists() or out.stat().st_size == 0:  # items reach the sink
            __import__("time").sleep(0.1)
    stopped = sage_run("jobs", "stop", job, "--drain", "--address", plain_dask)
    assert stopped.returncode == 0, stopped.stderr
    with JobClient(plain_dask) as jc:
        final = jc.wait(job, timeout=120)
        assert final["status"] == "drained", jc.logs(job)
        logs = jc.logs(job)
    assert any("drain requested" in line for line in logs)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    # the source stopped early, and every item it emitted reached the sink in order
    assert 0 < final["items"] < 10**6
    assert written == list(range(final["items"]))


def test_jobs_running_when_the_scheduler_dies_are_reported_lost(
    dask_processes, job_spec, sage_run, until_status, tmp_path
):
    from sage_core import JobClient

    scheduler, address, _ = dask_processes.scheduler()
    dask_processes.worker(address)
    short = job_spec(tmp_path / "short.yaml", "short", 20, tmp_path / "short.jsonl")
    long = job_spec(tmp_path / "long.yaml", "long", 10**6, tmp_path / "long.jsonl")
    with JobClient(address) as jc:
        done = jc.submit(short, owner="erin", priority=2)
        assert jc.wait(done, timeout=120)["status"] == "succeeded"
        job = jc.submit(long, owner="erin", priority=5)
        until_status(jc, job, "running")
    os.killpg(scheduler.pid, signal.SIGKILL)  # no chance to write anything more
    scheduler.wait(10)

    _, address2, dashboard = dask_processes.scheduler()  # same SAGE_HOME
    status = sage_run("jobs", "status", job, "--address", address2)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["status"] == "lost"
    assert "scheduler restarted while the job was running" in info["error"]
    assert (info["name"], info["owner"], info["priority"]) == ("long", "erin", 5)
    assert info["started"] is not None and info["ended"] is not None
    listed = json.loads(sage_run("jobs", "list", "--address", address2).stdout)
    by_id = {j["job"]: j["status"] for j in listed}
    assert by_id == {done: "succeeded", job: "lost"}
    logs = sage_run("jobs", "logs", job, "--address", address2).stdout
    assert "running" in logs and "lost:" in logs
    page = httpx.get(f"{dashboard}/sage/api/jobs", timeout=30).json()
    assert {j["job"]: j["status"] for j in page["jobs"]}[job] == "lost"
