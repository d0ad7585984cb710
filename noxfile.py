# /// script
# dependencies = ["nox>=2024.10"]
# ///
"""Development sessions: tests, lint, benchmarks and stubs.

``nox`` runs the defaults (tests, lint); ``nox -t bench`` runs every benchmark.
"""

from __future__ import annotations

import nox

nox.needs_version = ">=2024.10"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"


def _install_project(session: nox.Session, *groups: str) -> None:
    deps = [
        dep
        for group in groups
        for dep in nox.project.dependency_groups(PYPROJECT, group)
    ]
    if deps:
        session.install(*deps)
    session.install(".")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the default test suite against the installed package (no slow tests)."""
    _install_project(session, "test")
    session.run("pytest", "-m", "not slow and not inference", *session.posargs)


@nox.session(name="tests-slow", python=PYTHON, default=False)
def tests_slow(session: nox.Session) -> None:
    """Run the slow tests: real scheduler/worker processes, pip-installed plugins."""
    _install_project(session, "test")
    session.run("pytest", "-m", "slow and not inference", *session.posargs)


def _install_inference(session: nox.Session) -> None:
    # pip (not uv) finds the lock's torch 2.13.0+cpu in the machine's local wheel
    # directory; the lock leaves out CUDA-only torchvision/torchaudio/triton on purpose
    session.install("--no-deps", "-r", "requirements/inference.lock.txt")
    _install_project(session, "test")


INFERENCE_ENV = {
    "SAGE_REQUIRE_INFERENCE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


@nox.session(
    name="tests-inference",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
)
def tests_inference(session: nox.Session) -> None:
    """Run the inference tests on real engines: vLLM CPU, the packaged MiniLM."""
    _install_inference(session)
    session.run(
        "pytest",
        "-m",
        "inference",
        "--timeout=1200",
        *session.posargs,
        env=INFERENCE_ENV,
    )


@nox.session(name="bench-gateway", python=PYTHON, default=False, tags=["bench"])
def bench_gateway(session: nox.Session) -> None:
    """Gateway added latency and requests/s over a trivial engine, same run."""
    _install_project(session, "bench")
    session.run("python", "bench/gateway_bench.py", *session.posargs)


@nox.session(
    name="bench-mixed",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
    tags=["bench"],
)
def bench_mixed(session: nox.Session) -> None:
    """Mixed LLM + embedding workload on real vLLM CPU engines: hybrid/fifo/siloed."""
    _install_inference(session)
    session.install(*nox.project.dependency_groups(PYPROJECT, "bench"))
    session.run("python", "bench/mixed_bench.py", *session.posargs, env=INFERENCE_ENV)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, import-linter contracts and mypy on sage_core."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.install(*PYPROJECT["project"]["dependencies"])
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")
    session.run("mypy")


@nox.session(name="bench-queue", python=PYTHON, default=False, tags=["bench"])
def bench_queue(session: nox.Session) -> None:
    """Queue hand-off items/s vs queue.Queue (items, lists) and a deque (JSON + PNG)."""
    _install_project(session, "bench")
    smoke = "--smoke" in session.posargs
    raw = "bench/results/queue-smoke.json" if smoke else "bench/results/queue.json"
    session.run(
        "pytest",
        "bench/test_queue.py",
        "--benchmark-only",
        f"--benchmark-json={raw}",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )
    session.run("python", "bench/queue_report.py", raw, *(["--smoke"] if smoke else []))


@nox.session(
    name="bench-index",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
    tags=["bench"],
)
def bench_index(session: nox.Session) -> None:
    """Vector indexes vs numpy, FAISS (flat, IVF), hnswlib, usearch: recall/QPS curves."""
    # the real-text set embeds the demo corpus with the packaged MiniLM
    _install_inference(session)
    session.install(*nox.project.dependency_groups(PYPROJECT, "bench"))
    session.run(
        "python",
        "bench/bench_index.py",
        "--out",
        "bench/results/index.json",
        *session.posargs,
    )


@nox.session(name="bench-runtime", python=PYTHON, default=False, tags=["bench"])
def bench_runtime(session: nox.Session) -> None:
    """COMPUTE pipeline: local runtime vs for-loops, threads+Queue, Bytewax (JSON+PNG)."""
    _install_project(session, "bench")
    session.run(
        "python",
        "bench/runtime_bench.py",
        "--out",
        "bench/results/runtime.json",
        *session.posargs,
    )


@nox.session(
    name="bench-rag",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
    tags=["bench"],
)
def bench_rag(session: nox.Session) -> None:
    """RAG pipeline on real engines: local/Dask runtimes vs the stages in a loop."""
    session.install("--no-deps", "-r", "requirements/inference.lock.txt")
    session.install("matplotlib>=3.8")
    session.install(".")
    session.run(
        "python",
        "bench/rag_bench.py",
        "--out",
        "bench/results/rag.json",
        *session.posargs,
        env=INFERENCE_ENV,
    )


@nox.session(name="bench-dask", python=PYTHON, default=False, tags=["bench"])
def bench_dask(session: nox.Session) -> None:
    """COMPUTE on 2 worker processes: SAGE vs pipelined Dask and Ray actors (JSON+PNG)."""
    _install_project(session, "bench")
    session.install("ray>=2.40")  # a peer only, never a package dependency
    session.run(
        "python",
        "bench/dask_bench.py",
        "--out",
        "bench/results/dask.json",
        *session.posargs,
    )


@nox.session(name="bench-policies", python=PYTHON, default=False, tags=["bench"])
def bench_policies(session: nox.Session) -> None:
    """MIXED workload on 4 single-thread workers under each placement policy."""
    _install_project(session, "bench")
    session.run(
        "python",
        "bench/policies_bench.py",
        "--out",
        "bench/results/policies.json",
        *session.posargs,
    )


@nox.session(python=PYTHON, default=False)
def stubs(session: nox.Session) -> None:
    """Regenerate sage_core/_native.pyi from the compiled extension."""
    _install_project(session)
    session.install("nanobind")
    session.run(
        "python",
        "-m",
        "nanobind.stubgen",
        "-m",
        "sage_core._native",
        "-o",
        "sage_core/_native.pyi",
    )
    session.run(
        "ruff",
        "format",
        "sage_core/_native.pyi",
        external=True,
        success_codes=[0, 1, 127],
    )
