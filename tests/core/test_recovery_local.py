"""Recovery in the local runtime: operator failures restart the job from its last
checkpoint and the output equals a failure-free run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import JobFailed, LocalEnvironment, RestartStrategyError

from .recovery_doubles import (
    KEYS,
    InjectedFaultDouble,
    RunningCountDouble,
    arm,
    expected_counts,
)


def _pipeline(
    env: LocalEnvironment,
    n: int,
    faults: str,
    *,
    count_parallelism: int = 2,
    sink: str = "jsonl",
    path: Path | None = None,
    pause_s: float = 0.0,
) -> None:
    s = env.from_collection(list(range(n))).map(
        InjectedFaultDouble, faults=faults, pause_s=pause_s
    )
    counted = s.key_by(lambda x: x % KEYS).map(
        RunningCountDouble, faults=faults, parallelism=count_parallelism
    )
    if sink == "jsonl":
        counted.sink("jsonl", path=str(path), parallelism=2)
    else:
        counted.sink("collect")


def _lines(path: Path) -> list[list[int]]:
    return sorted(json.loads(line) for line in path.read_text().splitlines())


def _env(tmp_path: Path, **settings: Any) -> LocalEnvironment:
    base: dict[str, Any] = {
        "checkpoint_interval_s": 0.01,
        "checkpoint_dir": str(tmp_path / "ckpt"),
    }
    base.update(settings)
    return LocalEnvironment("recovery", **base)


@settings(max_examples=12)
@given(
    n=st.integers(200, 3000),
    faults=st.sets(st.integers(0, 2999), max_size=3),
    count_parallelism=st.integers(1, 3),
    sink=st.sampled_from(["jsonl", "collect"]),
)
def test_output_after_random_operator_failures_equals_the_failure_free_run(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    faults: set[int],
    count_parallelism: int,
    sink: str,
) -> None:
    tmp = tmp_path_factory.mktemp("run")
    armed = arm(tmp / "faults", {x for x in faults if x < n})
    env = _env(tmp, restart=f"fixed({2 * len(faults) + 1}, 0)")
    out = tmp / "out.jsonl"
    _pipeline(env, n, armed, count_parallelism=count_parallelism, sink=sink, path=out)
    result = env.execute(timeout=120)
    got = _lines(out) if sink == "jsonl" else sorted(result.collected())
    assert got == sorted(expected_counts(n))
    assert result.metrics["checkpoints"]["restarts"] == len(
        {x for x in faults if x < n}
    )


def test_a_failure_without_restarts_left_fails_the_job(tmp_path: Path) -> None:
    armed = arm(tmp_path / "faults", {10, 20})
    env = _env(tmp_path, restart="fixed(1, 0)")
    _pipeline(env, 100, armed, sink="collect")
    with pytest.raises(JobFailed, match="injected fault"):
        env.execute(timeout=60)


def test_restarts_without_checkpoints_start_over(tmp_path: Path) -> None:
    armed = arm(tmp_path / "faults", {500})
    env = LocalEnvironment("recovery", restart="exponential(0.01, 0.1, 3)")
    _pipeline(env, 1000, armed, sink="collect")
    result = env.execute(timeout=60)
    assert sorted(result.collected()) == sorted(expected_counts(1000))


def test_two_sources_are_aligned_at_a_union(tmp_path: Path) -> None:
    armed = arm(tmp_path / "faults", {1500, 2600})
    env = _env(tmp_path, restart="fixed(3, 0)")
    a = env.from_collection(list(range(2000)))
    b = env.from_collection(list(range(2000, 3000)), parallelism=2)
    merged = a.union(b).map(InjectedFaultDouble, faults=armed, parallelism=2)
    merged.sink("jsonl", path=str(tmp_path / "out.jsonl"))
    env.execute(timeout=60)
    got = sorted(int(x) for x in (tmp_path / "out.jsonl").read_text().split())
    assert got == list(range(3000))


def _cancel_after_checkpoint(
    job: Any, ckpt: Path, timeout: float = 60, count: int = 1
) -> None:
    deadline = time.monotonic() + timeout
    while len(list(ckpt.glob("*/chk-*/MANIFEST.json"))) < count:
        assert time.monotonic() < deadline, "no checkpoint committed"
        time.sleep(0.01)
    job.cancel()
    job.wait(timeout)


@pytest.mark.parametrize("resumed_interval", [0.05, None])
def test_resume_at_another_parallelism_gives_the_same_keyed_state(
    tmp_path: Path, resumed_interval: float | None
) -> None:
    n = 3000
    out = tmp_path / "out.jsonl"
    env = _env(tmp_path, checkpoint_interval_s=0.05)
    _pipeline(env, n, "", count_parallelism=2, path=out, pause_s=0.0005)
    job = env.submit()
    _cancel_after_checkpoint(job, tmp_path / "ckpt")
    assert job.status() == "cancelled"
    env2 = _env(tmp_path, checkpoint_interval_s=resumed_interval)
    _pipeline(env2, n, "", count_parallelism=3, path=out)
    result = env2.execute(timeout=60, resume=job.job_id)
    assert result.job_id == job.job_id
    assert _lines(out) == sorted(expected_counts(n))


def test_an_operators_own_restart_strategy_applies_to_its_failures(
    tmp_path: Path,
) -> None:
    armed = arm(tmp_path / "faults", {300})
    env = _env(tmp_path)  # the job's restart: none
    s = env.from_collection(list(range(1000)))
    s = s.map(InjectedFaultDouble, faults=armed, restart="fixed(1, 0)")
    out = s.collect()
    result = env.execute(timeout=60)
    assert sorted(result.collected(out.name)) == list(range(1000))
    armed = arm(tmp_path / "faults", {300})
    env = _env(tmp_path)
    env.from_collection(list(range(1000))).map(InjectedFaultDouble, faults=armed)
    with pytest.raises(JobFailed, match="injected fault"):
        env.execute(timeout=60)


def test_a_malformed_operator_restart_is_named() -> None:
    env = LocalEnvironment("j")
    with pytest.raises(RestartStrategyError, match="fixed"):
        env.from_collection([1]).map(str, restart="fixed(two)")


def test_two_input_operators_align_and_joins_restore_their_store(
    tmp_path: Path,
) -> None:
    armed = arm(tmp_path / "faults", {700})
    env = _env(tmp_path, restart="fixed(2, 0)")
    left = env.from_collection([{"k": i % 50, "l": i} for i in range(1000)])
    right = env.from_collection([{"k": i, "r": i} for i in range(50)])
    slow = left.map(_fault_on_l, faults=armed)
    joined = slow.key_by("k").join(
        right.key_by("k"), lambda a, b: (a["l"], b["r"]), parallelism=2
    )
    marks = env.from_collection(list(range(300)))
    both = joined.connect(marks).co_map(lambda x: ("j", *x), lambda m: ("m", m))
    out = both.collect()
    result = env.execute(timeout=60)
    assert result.metrics["checkpoints"]["restarts"] == 1
    got = sorted(tuple(x) for x in result.collected(out.name))
    want = sorted(
        [("j", i, i % 50) for i in range(1000)] + [("m", m) for m in range(300)]
    )
    assert got == want


def _fault_on_l(item: dict[str, int], faults: str) -> dict[str, int]:
    path = Path(faults) / str(item["l"])
    if path.exists():
        path.unlink()
        raise RuntimeError(f"injected fault on {item['l']}")
    return item


def test_resume_skips_a_corrupt_checkpoint_for_the_previous_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = 3000
    env = _env(tmp_path, checkpoint_interval_s=0.05, checkpoints_retained=3)
    _pipeline(env, n, "", sink="collect", pause_s=0.0005)
    job = env.submit()
    _cancel_after_checkpoint(job, tmp_path / "ckpt", count=2)
    manifests = (tmp_path / "ckpt" / job.job_id).glob("chk-*/MANIFEST.json")
    newest = max(m.parent for m in manifests)
    for snap in newest.glob("*.pkl"):
        snap.write_bytes(b"corrupt")
    env2 = _env(tmp_path)
    _pipeline(env2, n, "", sink="collect")
    with caplog.at_level("WARNING", logger="sage_core.checkpoint.storage"):
        result = env2.execute(timeout=60, resume=job.job_id)
    assert "corrupt" in caplog.text
    assert result.metrics["checkpoints"]["restored_epoch"] < int(newest.name[4:])
    assert sorted(result.collected()) == sorted(expected_counts(n))
