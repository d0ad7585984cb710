"""Jobs on a cluster of plain ``dask scheduler``/``dask worker`` processes started with
SAGE's ``--preload``: submitted by one process, listed and stopped from others, and
finishing after the submitter has exited."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SLOW_MODULE = """
import time

def slow(x):
    time.sleep(0.01)
    return x
"""


def _spec(path: Path, name: str, n: int, out: Path) -> Path:
    path.write_text(
        f"name: {name}\n"
        "operators:\n"
        f"  - {{name: numbers, use: range, config: {{stop: {n}}}}}\n"
        "  - {name: slow, use: 'slowmod:slow', role: map, inputs: [numbers]}\n"
        f"  - {{name: out, use: jsonl, config: {{path: {out}}}, inputs: [slow]}}\n"
    )
    return path


@pytest.fixture
def plain_dask(processes, tmp_path, free_port, wait_for):
    """A plain dask scheduler + worker with SAGE's preload; a module the pipeline
    imports is on their path only (not the test's)."""
    (tmp_path / "slowmod.py").write_text(SLOW_MODULE)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    env["SAGE_HOME"] = str(tmp_path / "home")
    dask = str(Path(sys.executable).parent / "dask")
    sched_file = tmp_path / "scheduler.json"
    preload = ["--preload", "sage_core.runtime.preload"]
    processes.start(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", f"127.0.0.1:{free_port()}",
         "--scheduler-file", str(sched_file), *preload],
        "scheduler", cwd=tmp_path, env=env,
    )  # fmt: skip
    wait_for(sched_file.exists, 60, "the scheduler file")
    address = json.loads(sched_file.read_text())["address"]
    processes.start(
        [dask, "worker", address, "--nthreads", "2", "--no-nanny", *preload],
        "worker", cwd=tmp_path, env=env,
    )  # fmt: skip
    from distributed import Client

    with Client(address) as c:
        c.wait_for_workers(1, timeout=60)
    return address


def _sage(sage_cmd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sage_cmd, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_jobs_outlive_their_submitter_and_are_managed_elsewhere(
    plain_dask, sage_cmd, tmp_path
):
    from sage_core import JobClient

    out = tmp_path / "out.jsonl"
    spec = _spec(tmp_path / "short.yaml", "short", 300, out)
    done = _sage(sage_cmd, "submit", str(spec), "--address", plain_dask,
                 "--owner", "alice", "--priority", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip()  # the submitting process has exited here
    listed = _sage(sage_cmd, "jobs", "list", "--address", plain_dask)
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
    plain_dask, sage_cmd, tmp_path
):
    from sage_core import JobClient, JobError

    spec = _spec(tmp_path / "long.yaml", "long", 10**6, tmp_path / "long.jsonl")
    with JobClient(plain_dask) as jc:
        job = jc.submit(spec, owner="bob")
        for _ in range(600):
            if jc.status(job)["status"] == "running":
                break
            __import__("time").sleep(0.1)
    stopped = _sage(sage_cmd, "jobs", "stop", job[:10], "--address", plain_dask)
    assert stopped.returncode == 0, stopped.stderr
    with JobClient(plain_dask) as jc:
        assert jc.wait(job, timeout=120)["status"] == "cancelled"
        with pytest.raises(JobError, match="no job 'nope'"):
            jc.status("nope")
    logs = _sage(sage_cmd, "jobs", "logs", job, "--address", plain_dask)
    assert "stop requested" in logs.stdout and "cancelled" in logs.stdout
    missing = _sage(sage_cmd, "jobs", "status", "nope", "--address", plain_dask)
    assert missing.returncode != 0 and "no job 'nope'" in missing.stderr


def _until(jc, job: str, status: str) -> dict:
    for _ in range(1200):
        info = jc.status(job)
        if info["status"] == status:
            return info
        __import__("time").sleep(0.1)
    raise AssertionError(f"{job} never {status}: {jc.logs(job)}")


def test_fair_share_admission_queues_an_owners_second_job(
    plain_dask, sage_cmd, tmp_path
):
    from sage_core import JobClient

    spec = _spec(tmp_path / "long.yaml", "long", 10**6, tmp_path / "long.jsonl")
    set_ = _sage(sage_cmd, "jobs", "admission", "fair-share", "-o", "slots=1",
                 "--address", plain_dask)  # fmt: skip
    assert set_.returncode == 0, set_.stderr
    assert json.loads(set_.stdout) == {"policy": "fair-share", "options": {"slots": 1}}
    with JobClient(plain_dask) as jc:
        first = jc.submit(spec, owner="carol")
        second = jc.submit(spec, owner="carol")
        _until(jc, first, "running")
        waiting = jc.status(second)
        assert waiting["status"] == "queued"
        assert waiting["admission"][0]["reason"] == "carol runs 1 >= 1 slots"
        jc.stop(first)
        _until(jc, second, "running")
    explained = _sage(sage_cmd, "explain", second, "--address", plain_dask)
    assert explained.returncode == 0, explained.stderr
    assert "admission (fair-share): queued: carol runs 1 >= 1 slots" in explained.stdout
    assert (
        "admission (fair-share): admitted: carol runs 0 < 1 slots" in explained.stdout
    )
    with JobClient(plain_dask) as jc:
        jc.stop(second)
        assert jc.wait(second, timeout=120)["status"] == "cancelled"
