"""``sage diagnose JOB`` of a local job that ``sage run`` is still running, from
another process: the run writes its live counters into the job's record."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sage_core.cli import cli

OPS = """
import time


def slow(x):
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return x


def drop(x):
    return None
"""

SPEC = """
name: live
settings: {chaining: false, buffer_size: 8, trace_every: 4, metrics_interval_s: 0.5}
operators:
  - {name: nums, use: range, config: {stop: 10000000}}
  - {name: slow, use: "slowops:slow", role: map, inputs: [nums]}
  - {name: out, use: "slowops:drop", role: sink, inputs: [slow]}
"""


def _job_id(processes: Any, proc: Any, deadline: float) -> str:
    """The id ``sage run`` announces when the job starts."""
    while time.monotonic() < deadline:
        for line in processes.log(proc).splitlines():
            if line.startswith("job ") and " running " in line:
                return line.split()[1]
        assert proc.poll() is None, processes.log(proc)
        time.sleep(0.2)
    raise AssertionError(f"no job id announced: {processes.log(proc)}")


def test_diagnose_reads_a_running_local_job(
    tmp_path: Path, sage_home: Path, processes: Any, sage_cmd: list[str]
) -> None:
    (tmp_path / "slowops.py").write_text(OPS)
    spec = tmp_path / "live.yaml"
    spec.write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SAGE_HOME": str(sage_home)}
    proc = processes.start([*sage_cmd, "run", str(spec)], "run", env=env)
    deadline = time.monotonic() + 90
    job = _job_id(processes, proc, deadline)
    record = sage_home / "state" / "jobs" / f"{job}.json"
    out: dict[str, Any] = {}
    while time.monotonic() < deadline:
        live = CliRunner().invoke(cli, ["diagnose", job, "--json"])
        if live.exit_code == 0:
            out = json.loads(live.stdout)
            break
        time.sleep(0.5)
    assert out, live.output
    assert proc.poll() is None  # diagnosed while it runs
    assert json.loads(record.read_text())["status"] == "running"
    assert out["bottleneck"]["operator"] == "slow"
    assert out["bottleneck"]["class"] == "compute"
    assert out["measured"]["throughput"] > 0
    assert out["recommendations"]
