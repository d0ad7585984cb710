"""``sage diagnose``, ``sage whatif`` and ``sage explain --replay`` on real jobs:
one run by ``sage run`` (LocalRuntime), one on a Dask LocalCluster."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sage_core.cli import cli

SPEC = """
name: diag
settings: {chaining: false, buffer_size: 8, queue_capacity: 4, trace_every: 2}
operators:
  - {name: nums, use: range, config: {stop: 600}}
  - {name: slow, use: "tests.diagnosis.test_cli_diagnosis:slow", role: map,
     inputs: [nums]}
  - {name: out, use: "tests.diagnosis.test_cli_diagnosis:drop", role: sink,
     inputs: [slow]}
"""


def slow(x: int) -> int:
    end = time.perf_counter() + 0.0005
    while time.perf_counter() < end:
        pass
    return x


def drop(x: int) -> None:
    return None


@pytest.fixture
def local_job(tmp_path: Path, sage_home: Path) -> str:
    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC)
    result = CliRunner().invoke(cli, ["run", str(spec)])
    assert result.exit_code == 0, result.output
    (record,) = (sage_home / "state" / "jobs").glob("*.json")
    return record.stem


def _json(args: list[str]) -> Any:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_diagnose_names_the_slow_operator_of_a_local_job(local_job: str) -> None:
    out = _json(["diagnose", local_job, "--json"])
    assert out["bottleneck"]["operator"] == "slow"
    assert out["bottleneck"]["class"] == "compute"
    assert [r["operator"] for r in out["breakdown"]] == ["nums", "slow", "out"]
    assert out["critical_path"] == ["nums", "slow", "out"]
    recs = out["recommendations"]
    assert recs and all(r["predicted"]["throughput"] > 0 for r in recs)
    text = CliRunner().invoke(cli, ["diagnose", local_job])
    assert "bottleneck slow (compute)" in text.output
    from sage_core.diagnosis import job_model
    from sage_core.observe.records import load_record

    # local replicas have threads of their own: none runs on an event loop
    model = job_model(load_record(local_job))
    assert not any(t.loop for t in model.tasks)


def test_whatif_predicts_and_flags_unmeasured_batch_sizes(local_job: str) -> None:
    out = _json(
        [
            "whatif",
            local_job,
            "--set",
            "slow.parallelism=2",
            "--set",
            "buffer_size=64",
            "--json",
        ]
    )
    assert out["changes"] == ["slow.parallelism=2", "buffer_size=64"]
    assert out["throughput"] > 0 and out["p99_ms"] >= out["p50_ms"] > 0
    assert out["operators"]["slow"]["replicas"] == 2
    assert any("slow" in note for note in out["validity"])


def test_whatif_rejects_unknown_operators_and_knobs(local_job: str) -> None:
    bad_op = CliRunner().invoke(
        cli, ["whatif", local_job, "--set", "nope.parallelism=2"]
    )
    assert bad_op.exit_code != 0 and "no operator 'nope'" in bad_op.output
    bad_knob = CliRunner().invoke(cli, ["whatif", local_job, "--set", "slow.speed=2"])
    assert bad_knob.exit_code != 0 and "cannot read change" in bad_knob.output
    missing = CliRunner().invoke(cli, ["diagnose", "no-such-job"])
    assert missing.exit_code != 0 and "no job record" in missing.output


def test_whatif_pools_other_runs_of_the_same_pipeline(
    local_job: str, tmp_path: Path, sage_home: Path
) -> None:
    spec = tmp_path / "p.yaml"
    assert CliRunner().invoke(cli, ["run", str(spec)]).exit_code == 0
    jobs = sorted(p.stem for p in (sage_home / "state" / "jobs").glob("*.json"))
    other = next(j for j in jobs if j != local_job)
    alone = _json(["whatif", local_job, "--json"])
    pooled = _json(["whatif", local_job, "--also-run", other, "--json"])
    assert pooled["p99_ms"] > 0 and pooled["throughput"] > 0
    # the pooled calibration reads both runs' durations
    assert pooled["calibration"] != alone["calibration"]

    spec.write_text(SPEC.replace("buffer_size: 8", "buffer_size: 4"))
    assert CliRunner().invoke(cli, ["run", str(spec)]).exit_code == 0
    jobs_now = sorted(p.stem for p in (sage_home / "state" / "jobs").glob("*.json"))
    (different,) = set(jobs_now) - set(jobs)
    bad = CliRunner().invoke(cli, ["whatif", local_job, "--also-run", different])
    assert bad.exit_code != 0 and "not a run of the same pipeline" in bad.output


def test_whatif_calibrates_unmeasured_batch_sizes_with_another_run(
    local_job: str, tmp_path: Path, sage_home: Path
) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC.replace("buffer_size: 8", "buffer_size: 4"))
    jobs = {p.stem for p in (sage_home / "state" / "jobs").glob("*.json")}
    assert CliRunner().invoke(cli, ["run", str(spec)]).exit_code == 0
    (small,) = {p.stem for p in (sage_home / "state" / "jobs").glob("*.json")} - jobs
    change = ["whatif", local_job, "--set", "buffer_size=4", "--json"]

    from sage_core.diagnosis import job_model, predict
    from sage_core.diagnosis.calibrate import extend_service
    from sage_core.diagnosis.whatif import Change
    from sage_core.observe.records import load_record

    calibrated = _json([*change, "--calibrate-with", small])
    model = extend_service(
        job_model(load_record(local_job)), [job_model(load_record(small))]
    )
    expected = predict(model, [Change(None, "buffer_size", 4)])
    assert calibrated["validity"] == expected["validity"]
    assert calibrated["throughput"] == pytest.approx(expected["throughput"])

    renamed = {"name: slow": "name: busy", "[slow]": "[busy]", "name: out": "name: o"}
    text = SPEC
    for a, b in renamed.items():
        text = text.replace(a, b)
    spec.write_text(text)
    jobs = {p.stem for p in (sage_home / "state" / "jobs").glob("*.json")}
    assert CliRunner().invoke(cli, ["run", str(spec)]).exit_code == 0
    (unrelated,) = {
        p.stem for p in (sage_home / "state" / "jobs").glob("*.json")
    } - jobs
    bad = CliRunner().invoke(cli, [*change, "--calibrate-with", unrelated])
    assert bad.exit_code != 0 and "shares no operator" in bad.output


def test_replay_on_a_local_job_keeps_every_replica_in_process(local_job: str) -> None:
    out = _json(["explain", local_job, "--replay", "round-robin", "--json"])
    assert {d["replayed"] for d in out["decisions"]} == {"local"}
    assert not any(d["changed"] for d in out["decisions"])
    assert out["predicted"]["throughput"] > 0


def test_dask_job_diagnose_whatif_and_replay(sage_home: Path) -> None:
    from sage_core.api.dask_environment import DaskEnvironment

    env = DaskEnvironment(
        "diag-dask",
        n_workers=2,
        policy="load-aware-pack",
        chaining=False,
        buffer_size=8,
        trace_every=2,
    )
    try:
        env.client.wait_for_workers(2)
        s = env.from_source("range", stop=400, name="nums")
        s = s.map(slow, name="slow", parallelism=2, contract={"cpu": 0.25})
        s.sink(drop, name="out")
        job = env.submit()
        job.wait(120)
    finally:
        env.close()
    out = _json(["diagnose", job.job_id, "--json"])
    assert out["bottleneck"]["operator"] == "slow"
    from sage_core.diagnosis import job_model
    from sage_core.observe.records import load_record

    # the sink's steps ran on its worker's event loop, and the model knows it
    assert job_model(load_record(job.job_id)).task("out").loop
    spread = _json(
        [
            "whatif",
            job.job_id,
            "--policy",
            "load-aware-spread",
            "--workers",
            "4",
            "--json",
        ]
    )
    assert len(spread["workers"]) >= 2 and spread["throughput"] > 0
    replay = _json(["explain", job.job_id, "--replay", "load-aware-spread", "--json"])
    assert [d["replica"] for d in replay["decisions"]] == [
        "nums#0",
        "slow#0",
        "slow#1",
        "out#0",
    ]
    same = _json(["explain", job.job_id, "--replay", "load-aware-pack", "--json"])
    assert not any(d["changed"] for d in same["decisions"])


def test_diagnose_a_running_dask_job_from_the_scheduler_board(sage_home: Path) -> None:
    from sage_core.api.dask_environment import DaskEnvironment

    env = DaskEnvironment("diag-live", n_workers=2, chaining=False, buffer_size=8)
    try:
        env.client.wait_for_workers(2)
        s = env.from_source("range", stop=20_000, name="nums")
        s.map(slow, name="slow").sink(drop, name="out")
        job = env.submit()
        address = env.client.scheduler.address
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            live = CliRunner().invoke(
                cli, ["diagnose", job.job_id, "--address", address, "--json"]
            )
            if live.exit_code == 0:
                break
            time.sleep(0.5)
        assert live.exit_code == 0, live.output
        assert job.status() == "running"
        out = json.loads(live.stdout)
        assert out["bottleneck"]["operator"] == "slow"
        job.cancel()
        job.wait(60)
    finally:
        env.close()
