"""``sage run`` with checkpoints, killed with SIGKILL, then ``sage run --resume``:
the jsonl sink holds every item exactly once."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DOUBLES = Path(__file__).parents[1] / "core" / "recovery_doubles.py"

SPEC = """
name: resumable
settings: {{checkpoint_interval_s: 0.1, checkpoint_dir: "{ckpt}", restart: "none"}}
operators:
  - {{name: nums, use: range, config: {{stop: {n}}}}}
  - {{name: slow, use: "recovery_doubles:InjectedFaultDouble", role: map,
     config: {{pause_s: {pause}}}, inputs: [nums]}}
  - {{name: out, use: jsonl, config: {{path: "{out}"}}, inputs: [slow], parallelism: 2}}
"""


def test_a_killed_run_resumes_from_its_last_checkpoint_exactly_once(
    tmp_path: Path, sage_cmd: list[str]
) -> None:
    n = 3000
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(DOUBLES, lib / "recovery_doubles.py")
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.jsonl"
    spec = tmp_path / "p.yaml"
    env = {
        "SAGE_HOME": str(tmp_path / "home"),
        "PATH": str(Path(sys.executable).parent),
        "PYTHONPATH": str(lib),
    }
    spec.write_text(SPEC.format(ckpt=ckpt, out=out, n=n, pause=0.002))
    log = tmp_path / "first.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*sage_cmd, "run", str(spec)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 60
            while len(list(ckpt.glob("*/chk-*/MANIFEST.json"))) < 2:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no checkpoint committed"
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    job_id = next(ckpt.iterdir()).name
    published = out.read_text().split() if out.exists() else []
    assert len(published) < n  # killed mid-job
    spec.write_text(SPEC.format(ckpt=ckpt, out=out, n=n, pause=0))
    resumed = subprocess.run(
        [*sage_cmd, "run", str(spec), "--resume", job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"job {job_id} succeeded" in resumed.stderr
    assert sorted(int(x) for x in out.read_text().split()) == list(range(n))
