"""Jobs on a cluster of plain ``dask scheduler``/``dask worker`` processes started with
SAGE's ``--preload``: submitted by one process, listed and stopped from others, and
finishing after the submitter has exited."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_jobs_outlive_their_submitter_and_are_managed_elsewhere(
    plain_dask, job_spec, sage_run, tmp_path
):
    from sage_core import JobClient

    out = tmp_path / "out.jsonl"
    spec = job_spec(tmp_path / "short.yaml", "short", 300, out)
    done = sage_run("submit", str(spec), "--address", plain_dask,
                 "--owner", "alice", "--priority", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip()  # the submitting process has exited here
    listed = sage_run("jobs", "list", "--address", plain_dask)
    assert listed.returncode == 0, listed.stderr
    (info,) = [j for j in json.loads(listed.stdout) if j["job"] == job]
    assert (info["name"], info["owner"], info["priority"]) == ("short", "alice", 3)
    with JobClient(plain_dask) as jc:
        final = jc.wait(job, timeout=120)
        assert final["status"] == "succeeded", jc.logs(job)
        assert final["items"] == 300
        assert any("succeeded" in line for line in jc.logs(job))
    assert sorted(json.loads(line) for line in out.read_text().splitlines()) == list(
        range(300)
    )


def test_a_job_stopped_from_another_process_is_cancelled(
    plain_dask, job_spec, sage_run, tmp_path
):
    from sage_core import JobClient, JobError

    spec = job_spec(tmp_path / "long.yaml", "long", 10**6, tmp_path / "long.jsonl")
    with JobClient(plain_dask) as jc:
        job = jc.submit(spec, owner="bob")
        for _ in range(600):
            if jc.status(job)["status"] == "running":
                break
            __import__("time").sleep(0.1)
    stopped = sage_run("jobs", "stop", job[:10], "--address", plain_dask)
    assert stopped.returncode == 0, stopped.stderr
    with JobClient(plain_dask) as jc:
        assert jc.wait(job, timeout=120)["status"] == "cancelled"
        with pytest.raises(JobError, match="no job 'nope'"):
            jc.status("nope")
    logs = sage_run("jobs", "logs", job, "--address", plain_dask)
    assert "stop requested" in logs.stdout and "cancelled" in logs.stdout
    missing = sage_run("jobs", "status", "nope", "--address", plain_dask)
    assert missing.returncode != 0 and "no job 'nope'" in missing.stderr


def test_fair_share_admission_queues_an_owners_second_job(
    plain_dask, job_spec, sage_run, until_status, tmp_path
):
    from sage_core import JobClient

    spec = job_spec(tmp_path / "long.yaml", "long", 10**6, tmp_path / "long.jsonl")
    set_ = sage_run("jobs", "admission", "fair-share", "-o", "slots=1",
                 "--address", plain_dask)  # fmt: skip
    assert set_.returncode == 0, set_.stderr
    assert json.loads(set_.stdout) == {"policy": "fair-share", "options": {"slots": 1}}
    with JobClient(plain_dask) as jc:
        first = jc.submit(spec, owner="carol")
        second = jc.submit(spec, owner="carol")
        until_status(jc, first, "running")
        waiting = jc.status(second)
        assert waiting["status"] == "queued"
        assert waiting["admission"][0]["reason"] == "carol runs 1 >= 1 slots"
        jc.stop(first)
        until_status(jc, second, "running")
    explained = sage_run("explain", second, "--address", plain_dask)
    assert explained.returncode == 0, explained.stderr
    assert "admission (fair-share): queued: carol runs 1 >= 1 slots" in explained.stdout
    assert (
        "admission (fair-share): admitted: carol runs 0 < 1 slots" in explained.stdout
    )
    with JobClient(plain_dask) as jc:
        jc.stop(second)
        assert jc.wait(second, timeout=120)["status"] == "cancelled"


def test_a_running_job_is_scaled_in_place_from_another_process(
    plain_dask, job_spec, sage_run, tmp_path, until_status, monkeypatch
):
    """``sage jobs scale JOB slow=3`` adds two replicas to the running job (no
    restart: the job keeps its id and its source), every item arrives once, and
    the job's log and record say what changed."""
    from sage_core import JobClient
    from sage_core.observe.records import load_record

    out = tmp_path / "out.jsonl"
    spec = job_spec(tmp_path / "scaled.yaml", "scaled", 1500, out)
    with spec.open("a") as f:
        f.write("settings: {chaining: false}\n")  # chained, slow could not scale
    with JobClient(plain_dask) as jc:
        job = jc.submit(spec)
        until_status(jc, job, "running")
    bad = sage_run("jobs", "scale", job, "slow=0", "--address", plain_dask)
    assert bad.returncode != 0 and "OP=N with N >= 1" in bad.stderr
    wrong = sage_run("jobs", "scale", job, "numbers=2", "--address", plain_dask)
    assert wrong.returncode != 0 and "a source" in wrong.stderr
    scaled = sage_run("jobs", "scale", job, "slow=3", "--address", plain_dask)
    assert scaled.returncode == 0, scaled.stderr
    (change,) = json.loads(scaled.stdout)
    assert change["changed"] == ["slow#1", "slow#2"]
    with JobClient(plain_dask) as jc:
        assert jc.wait(job, timeout=120)["status"] == "succeeded", jc.logs(job)
        assert any("slow scaled to 3 replicas" in line for line in jc.logs(job))
    assert sorted(json.loads(line) for line in out.read_text().splitlines()) == list(
        range(1500)
    )
    monkeypatch.setenv("SAGE_HOME", str(tmp_path / "home"))  # the cluster's
    record = load_record(job)
    assert [r["added"] for r in record["rescales"]] == ["slow#1", "slow#2"]
    assert {"slow#1", "slow#2"} <= set(record["metrics"]["replicas"])


def test_jobs_admitted_together_are_placed_apart(
    dask_processes, job_spec, tmp_path, until_status, monkeypatch
):
    """Two jobs submitted at once on two one-thread workers land on different
    workers: each is placed seeing the other's replicas, not an empty cluster."""
    from sage_core import JobClient
    from sage_core.observe.records import load_record

    _, address, _ = dask_processes.scheduler()
    dask_processes.worker(address)
    dask_processes.worker(address)
    from distributed import Client

    with Client(address) as c:
        c.wait_for_workers(2, timeout=60)
    with JobClient(address) as jc:
        jobs = [
            jc.submit(job_spec(tmp_path / f"j{i}.yaml", f"j{i}", 300,
                               tmp_path / f"j{i}.jsonl"))
            for i in range(2)
        ]  # fmt: skip
        for job in jobs:
            assert jc.wait(job, timeout=120)["status"] == "succeeded", jc.logs(job)
    monkeypatch.setenv("SAGE_HOME", str(tmp_path / "home"))  # the cluster's
    hosts = [
        {p["worker"] for p in load_record(job)["placement"].values()} for job in jobs
    ]
    assert all(len(h) == 1 for h in hosts) and hosts[0] != hosts[1], hosts
