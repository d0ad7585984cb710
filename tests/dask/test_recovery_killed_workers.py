"""Lost workers at random points (hypothesis): a 3-process ``LocalCluster`` (workers
under nannies, as ``dask worker`` runs them), a keyed running count into a jsonl sink,
and ``SIGKILL`` of one worker process after a random number of committed checkpoints
plus a random delay; the sink file equals the failure-free reference."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import cloudpickle
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sage_core.api.dask_environment import DaskEnvironment
from tests.core import recovery_doubles
from tests.core.recovery_doubles import (
    KEYS,
    InjectedFaultDouble,
    RunningCountDouble,
    expected_counts,
)

pytestmark = pytest.mark.slow

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(recovery_doubles)

N = 12_000


def _key(x: int) -> int:
    return x % KEYS


def _victim(job: Any, role: str, workers: list[str]) -> str:
    hosts = {p["replica"].split("#")[0]: p["worker"] for p in job.placement()}
    if role == "count":
        return min(
            p["worker"] for p in job.placement() if p["replica"].startswith("count")
        )
    if role == "source":
        return str(
            next(w for r, w in hosts.items() if r not in ("slow", "count", "sink"))
        )
    busy = {p["worker"] for p in job.placement()}
    idle = [w for w in workers if w not in busy]
    return idle[0] if idle else workers[-1]


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@settings(
    max_examples=3,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # a shrink reruns a cluster per step
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    commits=st.integers(1, 3),
    delay_s=st.floats(0.0, 0.4),
    role=st.sampled_from(["count", "source", "other"]),
)
def test_a_worker_killed_at_a_random_point_loses_and_repeats_nothing(
    tmp_path_factory: pytest.TempPathFactory, commits: int, delay_s: float, role: str
) -> None:
    import dask
    from distributed import Client, LocalCluster

    tmp = tmp_path_factory.mktemp("kill")
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(
            n_workers=3, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    try:
        with Client(cluster) as client:
            client.wait_for_workers(3, timeout=60)
            pids = client.run(os.getpid)  # by address; placement names workers
            info = client.scheduler_info(n_workers=-1)["workers"]
            pid_of = {str(w["name"]): pids[a] for a, w in info.items()}
            out = tmp / "out.jsonl"
            env = DaskEnvironment(
                "kill-random",
                client=client,
                checkpoint_interval_s=0.3,
                checkpoint_dir=str(tmp / "ckpt"),
                restart="fixed(3, 0.2)",
            )
            s = env.from_collection(list(range(N))).map(
                InjectedFaultDouble, pause_s=0.0005, name="slow"
            )
            s.key_by(_key).map(RunningCountDouble, parallelism=2, name="count").sink(
                "jsonl", path=str(out), name="sink"
            )
            job = env.submit()
            _wait(
                lambda: (
                    job.done()
                    or job.metrics().get("checkpoints", {}).get("completed", 0)
                    >= commits
                ),
                120,
                f"{commits} committed checkpoints",
            )
            time.sleep(delay_s)
            killed = not job.done()
            if killed:
                victim = _victim(job, role, sorted(pid_of))
                os.kill(pid_of[victim], signal.SIGKILL)
            result = job.wait(timeout=300)
            got = sorted(json.loads(line) for line in out.read_text().splitlines())
            assert got == sorted(expected_counts(N))
            if killed and role != "other":
                assert result.metrics["checkpoints"]["restarts"] >= 1
    finally:
        cluster.close()
