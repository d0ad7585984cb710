"""Checkpoints and recovery on the Dask runtime (embedded 2-worker cluster): barriers
cross workers, checkpoints commit, and a keyed stateful pipeline with injected
operator failures gives exactly the failure-free output."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import JobFailed
from sage_core.api.dask_environment import DaskEnvironment
from sage_core.checkpoint.storage import CheckpointDirError
from tests.core.recovery_doubles import (
    KEYS,
    InjectedFaultDouble,
    RunningCountDouble,
    arm,
    expected_counts,
)


def _env(client: Any, tmp: Path, **kw: Any) -> DaskEnvironment:
    base: dict[str, Any] = {
        "checkpoint_interval_s": 0.05,
        "checkpoint_dir": str(tmp / "ckpt"),
    }
    base.update(kw)
    return DaskEnvironment("recovery", client=client, **base)


def _pipeline(
    env: DaskEnvironment, n: int, faults: str, *, out: Path | None, count_p: int = 2
) -> None:
    s = env.from_collection(list(range(n))).map(
        InjectedFaultDouble, faults=faults, pause_s=0.0002
    )
    counted = s.key_by(lambda x: x % KEYS).map(
        RunningCountDouble, faults=faults, parallelism=count_p
    )
    if out is None:
        counted.sink("collect")
    else:
        counted.sink("jsonl", path=str(out))


def _lines(path: Path) -> list[list[int]]:
    return sorted(json.loads(line) for line in path.read_text().splitlines())


def test_checkpoints_commit_across_workers(embedded: Any, tmp_path: Path) -> None:
    env = _env(embedded, tmp_path)
    out = tmp_path / "out.jsonl"
    _pipeline(env, 3000, "", out=out)
    result = env.execute(timeout=120)
    assert _lines(out) == sorted(expected_counts(3000))
    stats = result.metrics["checkpoints"]
    assert stats["completed"] >= 1 and stats["failed"] == 0
    manifests = list((tmp_path / "ckpt").glob("*/chk-*/MANIFEST.json"))
    assert manifests
    replicas = json.loads(manifests[-1].read_text())["replicas"]
    assert len(replicas) == len(env.compile().replicas)


def test_checkpoint_stats_reach_the_board_and_prometheus(
    embedded: Any, tmp_path: Path
) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from sage_core.observe.prometheus import SageCollector

    env = _env(embedded, tmp_path)
    _pipeline(env, 2000, "", out=None)
    job = env.submit()
    job.wait(timeout=120)
    record = embedded.sync(embedded.scheduler.sage_job, job=job.job_id)
    assert record["checkpoints"]["completed"] >= 1
    registry = CollectorRegistry()
    registry.register(SageCollector())
    text = generate_latest(registry).decode()
    line = next(
        x
        for x in text.splitlines()
        if x.startswith("sage_checkpoints_completed_total") and job.job_id in x
    )
    assert float(line.split()[-1]) == record["checkpoints"]["completed"]


@settings(max_examples=4)
@given(
    n=st.integers(500, 3000),
    faults=st.sets(st.integers(0, 2999), min_size=1, max_size=2),
    sink=st.sampled_from(["jsonl", "collect"]),
)
def test_output_after_operator_failures_equals_the_failure_free_run(
    embedded: Any,
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    faults: set[int],
    sink: str,
) -> None:
    tmp = tmp_path_factory.mktemp("run")
    hit = {x for x in faults if x < n}
    armed = arm(tmp / "faults", hit)
    env = _env(embedded, tmp, restart=f"fixed({2 * len(faults) + 1}, 0)")
    out = tmp / "out.jsonl" if sink == "jsonl" else None
    _pipeline(env, n, armed, out=out)
    result = env.execute(timeout=180)
    got = _lines(out) if out is not None else sorted(result.collected())
    assert got == sorted(expected_counts(n))
    assert result.metrics["checkpoints"]["restarts"] == len(hit)


def test_failure_without_restarts_left_fails_the_job(
    embedded: Any, tmp_path: Path
) -> None:
    armed = arm(tmp_path / "faults", {10, 20})
    env = _env(embedded, tmp_path, restart="fixed(1, 0)")
    _pipeline(env, 200, armed, out=None)
    with pytest.raises(JobFailed, match="injected fault"):
        env.execute(timeout=60)


def test_unwritable_checkpoint_dir_fails_at_submit(
    embedded: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = _env(embedded, tmp_path, checkpoint_dir=str(blocker / "sub"))
    _pipeline(env, 10, "", out=None)
    with pytest.raises(CheckpointDirError):
        env.submit()


def test_resume_on_dask_at_another_parallelism(embedded: Any, tmp_path: Path) -> None:
    n = 6000
    out = tmp_path / "out.jsonl"
    env = _env(embedded, tmp_path)
    _pipeline(env, n, "", out=out)
    job = env.submit()
    deadline = time.monotonic() + 60
    while not list((tmp_path / "ckpt").glob("*/chk-*/MANIFEST.json")):
        assert time.monotonic() < deadline, "no checkpoint committed"
        time.sleep(0.01)
    job.cancel()
    job.wait(60)
    assert job.status() == "cancelled"
    env2 = _env(embedded, tmp_path)
    _pipeline(env2, n, "", out=out, count_p=3)
    result = env2.execute(timeout=120, resume=job.job_id)
    assert result.job_id == job.job_id
    assert result.metrics["checkpoints"]["restored_epoch"] >= 1
    assert _lines(out) == sorted(expected_counts(n))
