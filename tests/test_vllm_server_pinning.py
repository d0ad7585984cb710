"""``VLLMServer(cpus=...)``: what pins a vLLM CPU server, checked without vLLM (the
environment it gets, the affinity its process starts with, the named errors)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sage_plugins.engines.vllm_server import EngineStartError, VLLMServer

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only"
)


def test_a_pinned_server_binds_its_engine_threads_and_starts_on_its_cpus() -> None:
    cpu = max(os.sched_getaffinity(0))
    server = VLLMServer("/models/tiny", cpus=[cpu])
    env = server.environment()
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == str(cpu)
    assert env["OMP_NUM_THREADS"] == "1"
    # the hook the server's process runs before exec: it and its children stay there
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
        preexec_fn=server._pin,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"[{cpu}]"


def test_an_unpinned_server_leaves_vllm_its_own_binding() -> None:
    env = VLLMServer("/models/tiny").environment()
    assert env.get("VLLM_CPU_OMP_THREADS_BIND") == os.environ.get(
        "VLLM_CPU_OMP_THREADS_BIND"
    )


@pytest.mark.parametrize("cpus", [[], [True], ["0"], [10_000]])
def test_cpus_that_cannot_be_used_are_refused_by_name(cpus: list[object]) -> None:
    with pytest.raises(EngineStartError, match="cpus"):
        VLLMServer("/models/tiny", cpus=cpus)  # type: ignore[arg-type]
