"""Real `sage scheduler` + `sage worker` over mutual TLS (certificates made here):
`sage run` and DaskEnvironment run a pipeline with the client's certificate, and a
peer without one, or with another CA's, is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

pytestmark = pytest.mark.slow

# the worker rebuilds this module's functions from the plan: ship them by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_pipeline_over_tls_and_strangers_refused(
    processes: Any,
    sage_cmd: list[str],
    tmp_path: Path,
    start_scheduler: Callable[..., tuple[Any, str]],
    tls_maker: Callable[[Path], tuple[str, str, str]],
) -> None:
    from distributed.security import Security

    from sage_core.api.dask_environment import DaskEnvironment, connect_client

    ca, cert, key = tls_maker(tmp_path / "tls")
    tls = ["--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key]
    scheduler, address = start_scheduler(processes, tmp_path, *tls)
    scheduler_file = tmp_path / "scheduler.json"
    assert address.startswith("tls://127.0.0.1:")
    worker = processes.start(
        [
            *sage_cmd,
            "worker",
            "--scheduler-file",
            str(scheduler_file),
            "--name",
            "tls-0",
            "--host",
            "127.0.0.1",
            *tls,
        ],
        "worker",
        cwd=tmp_path,
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: tls-job\n"
        "operators:\n"
        "  - {name: nums, use: range, config: {stop: 200}}\n"
        "  - {name: out, use: collect, inputs: [nums]}\n"
    )
    home = tmp_path / "sage-home"
    env = {"SAGE_HOME": str(home), "PATH": str(Path(sys.executable).parent)}
    try:
        security = Security(
            tls_ca_file=ca,
            tls_client_cert=cert,
            tls_client_key=key,
            require_encryption=True,
        )
        with DaskEnvironment("tls-py", address=address, security=security) as denv:
            denv.client.wait_for_workers(1, timeout=120)
            denv.from_collection(list(range(50))).map(lambda x: x * 2).sink("collect")
            result = denv.submit().wait(timeout=120)
            assert sorted(result.collected()) == [x * 2 for x in range(50)]

        run = subprocess.run(
            [*sage_cmd, "run", str(spec), "--address", address, *tls],
            capture_output=True,
            check=False,
            text=True,
            timeout=180,
            env=env,
        )
        assert run.returncode == 0, run.stderr
        assert sorted(int(x) for x in run.stdout.split()) == list(range(200))
        job_id = run.stderr.split("job ", 1)[1].split()[0]
        explain = subprocess.run(
            [*sage_cmd, "explain", job_id, "--address", address, "--json", *tls],
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
            env=env,
        )
        assert explain.returncode == 0, explain.stderr
        decisions = json.loads(explain.stdout)
        # the one worker, by name or by its tls:// address
        assert decisions and all("tls" in d["worker"] for d in decisions)

        plain = subprocess.run(
            [*sage_cmd, "run", str(spec), "--address", address],
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
            env=env,
        )
        assert plain.returncode == 1 and "speaks TLS" in plain.stderr

        other_ca, other_cert, other_key = tls_maker(tmp_path / "other")
        stranger = Security(
            tls_ca_file=other_ca,
            tls_client_cert=other_cert,
            tls_client_key=other_key,
            require_encryption=True,
        )
        with (
            pytest.raises(OSError),
            connect_client(address, None, stranger, timeout="3s"),
        ):
            pass
    except BaseException:
        for proc in (scheduler, worker):
            print(processes.log(proc))
        raise
    for proc in (worker, scheduler):
        assert processes.stop(proc) == 0, processes.log(proc)
    assert "without TLS" not in processes.log(scheduler) + processes.log(worker)
