"""``sage serve SPEC`` as a real process: the words example answers over HTTP and
stops cleanly on SIGTERM."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"


def _healthy(proc: Any, url: str, processes: Any) -> Callable[[], bool]:
    """A predicate: the served pipeline answers /health (its process still runs)."""

    def healthy() -> bool:
        assert proc.poll() is None, processes.log(proc)
        try:
            return httpx.get(f"{url}/health").status_code == 200
        except httpx.TransportError:
            return False

    return healthy


def test_sage_serve_answers_and_stops(processes, sage_cmd, free_port, wait_for):
    port = free_port()
    proc = processes.start(
        [*sage_cmd, "serve", str(EXAMPLES / "words.yaml"), "--port", str(port)],
        "serve",
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(_healthy(proc, url, processes), 60, "sage serve")
    r = httpx.post(f"{url}/v1/pipelines/words", json="to be or not")
    assert r.json() == ["TO", "BE", "OR", "NOT"]  # split (flat_map) then upper
    assert processes.stop(proc) == 0, processes.log(proc)  # drained, clean exit


def test_sage_serve_refuses_a_pipeline_with_two_sources(sage_cli, tmp_path):
    from click.testing import CliRunner

    spec = tmp_path / "two.yaml"
    spec.write_text(
        "name: two\noperators:\n"
        "  - {name: a, use: range, config: {n: 3}}\n"
        "  - {name: b, use: range, config: {n: 3}}\n"
        "  - {name: out, use: print, inputs: [a, b]}\n"
    )
    result = CliRunner().invoke(sage_cli, ["serve", str(spec)])
    assert result.exit_code != 0 and "one source" in result.output


@pytest.mark.slow
def test_sage_serve_runs_the_operators_on_a_cluster(
    processes, sage_cmd, free_port, wait_for, start_scheduler, tmp_path
):
    """Real `sage scheduler` + `sage worker` processes: `sage serve --address`
    answers from replicas on the worker, and `--autoscale` is accepted and shown."""
    from distributed import Client

    _, address = start_scheduler(processes, tmp_path)
    processes.start(
        [*sage_cmd, "worker", address, "--host", "127.0.0.1", "--name", "w0"],
        "worker",
        cwd=tmp_path,
    )
    with Client(address, timeout=30) as client:
        client.wait_for_workers(1, timeout=120)
    port = free_port()
    proc = processes.start(
        [*sage_cmd, "serve", str(EXAMPLES / "words.yaml"), "--port", str(port),
         "--address", address, "--autoscale", "split=1:2"],
        "serve",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(_healthy(proc, url, processes), 90, "sage serve --address")
    r = httpx.post(f"{url}/v1/pipelines/words", json="to be or not", timeout=60)
    assert r.json() == ["TO", "BE", "OR", "NOT"], r.text
    scaling = httpx.get(f"{url}/v1/pipelines/words/scaling").json()
    assert scaling["autoscale"] == {"split": {"min": 1, "max": 2}}
    with Client(address, timeout=30) as client:
        jobs = client.sync(client.scheduler.sage_jobs)
    running = [j for j in jobs if str(j.get("job", "")).startswith("words")]
    assert running and running[0]["status"] == "running", jobs  # on the cluster
    assert processes.stop(proc) == 0, processes.log(proc)
