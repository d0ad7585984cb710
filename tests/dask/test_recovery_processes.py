"""Recovery from a lost worker on real processes: `sage scheduler` + 3 `sage worker`;
a keyed running count into a jsonl sink; `kill -9` of the worker hosting the
stateful replicas in the middle; the sink file equals the failure-free reference."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from sage_core.api.dask_environment import DaskEnvironment
from tests.core import recovery_doubles
from tests.core.recovery_doubles import (
    KEYS,
    InjectedFaultDouble,
    RunningCountDouble,
    expected_counts,
)

pytestmark = pytest.mark.slow

# the workers rebuild these operators from the plan: ship them by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(recovery_doubles)

N = 20_000


def _key(x: int) -> int:
    return x % KEYS


def _count_host(job: Any) -> str:
    return min(p["worker"] for p in job.placement() if p["replica"].startswith("count"))


@pytest.mark.parametrize(("kills", "pause_s"), [(1, 0.0005), (2, 0.001)])
def test_kill_9_of_the_stateful_worker_gives_the_reference_output(
    kills: int,
    pause_s: float,
    tmp_path: Path,
    sage_cmd: list[str],
    process_group: Any,
    start_scheduler: Callable[..., tuple[Any, str]],
    wait_for: Callable[..., None],
) -> None:
    from distributed import Client

    group = process_group(tmp_path)
    _, address = start_scheduler(group, tmp_path)
    workers = {}
    try:
        for name in ("w0", "w1", "w2"):
            argv = [*sage_cmd, "worker", address, "--name", name]
            argv += ["--no-nanny", "--host", "127.0.0.1"]
            workers[name] = group.start(argv, f"worker-{name}", cwd=tmp_path)
        with Client(address, timeout=30) as client:
            client.wait_for_workers(3, timeout=120)
            workers_addr = {
                w["name"]: a
                for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
            }
            out = tmp_path / "out.jsonl"
            env = DaskEnvironment(
                "kill9",
                client=client,
                checkpoint_interval_s=0.5,
                checkpoint_dir=str(tmp_path / "ckpt"),
                restart="fixed(3, 0.5)",
            )
            s = env.from_collection(list(range(N))).map(
                InjectedFaultDouble, pause_s=pause_s, name="slow"
            )
            s.key_by(_key).map(RunningCountDouble, parallelism=2, name="count").sink(
                "jsonl", path=str(out)
            )
            job = env.submit()
            victims = []
            for k in range(kills):
                done = job.metrics().get("checkpoints", {}).get("completed", 0)
                wait_for(
                    lambda d=done, k=k: (
                        (c := job.metrics().get("checkpoints", {})).get("completed", 0)
                        >= d + 2
                        and c.get("restarts", 0) == k
                    ),
                    120,
                    "two more committed checkpoints",
                )
                assert not job.done()
                victim = _count_host(job)
                victims.append(victim)
                workers[victim].send_signal(signal.SIGKILL)
            result = job.wait(timeout=300)
            assert result.metrics["checkpoints"]["restarts"] == kills
            got = sorted(json.loads(line) for line in out.read_text().splitlines())
            assert got == sorted(expected_counts(N))
            after = {p["worker"] for p in job.placement()}
            assert not after & set(victims)
            from sage_core.observe.records import load_record

            recoveries = load_record(job.job_id)["recoveries"]
            assert len(recoveries) == kills
            for i, recovery in enumerate(recoveries):
                lost = sorted(workers_addr[v] for v in victims[: i + 1])
                assert recovery["excluded"] == lost
                assert recovery["restored_epoch"] >= 2
                placed = {p["worker"] for p in recovery["placement"].values()}
                assert not placed & set(victims[: i + 1])
    finally:
        group.stop_all()


def test_a_gpu_operator_waits_for_a_gpu_worker_after_losing_its_own(
    tmp_path: Path,
    sage_cmd: list[str],
    process_group: Any,
    start_scheduler: Callable[..., tuple[Any, str]],
    wait_for: Callable[..., None],
) -> None:
    from distributed import Client

    from sage_core.observe.records import load_record

    group = process_group(tmp_path)
    _, address = start_scheduler(group, tmp_path)

    def worker(name: str, *extra: str) -> Any:
        argv = [*sage_cmd, "worker", address, "--name", name, "--no-nanny"]
        return group.start([*argv, "--host", "127.0.0.1", *extra], name, cwd=tmp_path)

    n = 6_000
    try:
        worker("cpu")
        gpu = worker("gpu-0", "--resources", "GPU=1")
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=120)
            out = tmp_path / "out.jsonl"
            env = DaskEnvironment(
                "gpu-wait",
                client=client,
                checkpoint_interval_s=0.5,
                checkpoint_dir=str(tmp_path / "ckpt"),
                restart="fixed(2, 0.1)",
            )
            s = env.from_collection(list(range(n))).map(
                InjectedFaultDouble,
                pause_s=0.002,
                name="on-gpu",
                contract={"gpu": 1},
            )
            s.key_by(_key).map(RunningCountDouble, name="count").sink(
                "jsonl", path=str(out)
            )
            job = env.submit()
            wait_for(
                lambda: job.metrics().get("checkpoints", {}).get("completed", 0) >= 2,
                120,
                "two committed checkpoints",
            )
            gpu.send_signal(signal.SIGKILL)
            wait_for(
                lambda: (
                    "GPU" in (load_record(job.job_id).get("waiting_for_workers") or "")
                ),
                60,
                "the job to say it waits for a GPU worker",
            )
            assert not job.done()
            worker("gpu-1", "--resources", "GPU=1")
            result = job.wait(timeout=300)
            assert result.metrics["checkpoints"]["restarts"] == 1
            got = sorted(json.loads(line) for line in out.read_text().splitlines())
            assert got == sorted(expected_counts(n))
            assert load_record(job.job_id).get("waiting_for_workers") is None
    finally:
        group.stop_all()
