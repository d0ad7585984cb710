# /// script
# dependencies = ["nox>=2024.10"]
# ///
"""Development sessions: tests, lint, benchmarks and stubs.

``nox`` runs the defaults (tests, lint); ``nox -t bench`` runs every benchmark.
"""

from __future__ import annotations

import os

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


ASAN_TESTS = [
    "tests/native",
    "tests/core/test_local_runtime.py",
    "tests/core/test_runtime_properties.py",
    "tests/dask/test_transport.py",
    "tests/dask/test_inbox_accept.py",
]


@nox.session(name="tests-asan", python=PYTHON, default=False)
def tests_asan(session: nox.Session) -> None:
    """Native and runtime tests on an AddressSanitizer + UBSan build of the extension."""
    session.install(
        *nox.project.dependency_groups(PYPROJECT, "test"),
        *PYPROJECT["project"]["dependencies"],
    )
    build = ["-C", "cmake.define.SAGE_SANITIZE=ON", "-C", "build-dir=build/asan"]
    build += ["-C", "install.strip=false"]  # symbols for the sanitizers' stacks
    if session.venv_backend == "uv":  # a cached wheel would be uninstrumented
        build += ["--refresh-package", "sage-dask"]
    session.install(*build, "--no-deps", ".")
    # the sanitizer runtime must load first, and libstdc++ with it (Python does not
    # link it: ASan would find no __cxa_throw to intercept)
    cxx = os.environ.get("CXX", "c++")
    preload = [
        session.run(cxx, f"-print-file-name={lib}", external=True, silent=True)
        for lib in ("libasan.so", "libstdc++.so")
    ]
    env = {
        "LD_PRELOAD": " ".join(str(p).strip() for p in preload),
        # Python's allocator keeps memory until exit: leak reports are noise;
        # hnswlib's bindings free new[] arrays with delete (not ours to fix)
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:strict_string_checks=1"
        ":alloc_dealloc_mismatch=0",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }
    check = (
        "import pathlib, sage_core._native as n; "
        "b = pathlib.Path(n.__file__).read_bytes(); "
        "assert b'__asan_report' in b and b'__ubsan_handle' in b, 'not instrumented'"
    )
    session.run("python", "-P", "-c", check, env=env)
    session.run(
        "pytest",
        "-m",
        "not slow and not inference",
        "-p",
        "no:cacheprovider",
        "--capture=sys",  # sanitizer reports go to fd 2 before the abort
        *(session.posargs or ASAN_TESTS),
        env=env,
    )


@nox.session(name="bench-gateway", python=PYTHON, default=False, tags=["bench"])
def bench_gateway(session: nox.Session) -> None:
    """Gateway added latency and requests/s over a trivial engine, same run."""
    _install_project(session, "bench")
    session.run("python", "bench/gateway_bench.py", *session.posargs)


@nox.session(name="bench-serve", python=PYTHON, default=False, tags=["bench"])
def bench_serve(session: nox.Session) -> None:
    """A served pipeline vs a hand-written asyncio service: Poisson load, p50/p99."""
    _install_project(session, "bench")
    session.run("python", "bench/serve_bench.py", *session.posargs)


@nox.session(name="bench-autoscale", python=PYTHON, default=False, tags=["bench"])
def bench_autoscale(session: nox.Session) -> None:
    """Served pipeline under overload: fixed 1 / fixed 4 replicas vs autoscaling."""
    _install_project(session, "bench")
    session.run("python", "bench/autoscale_bench.py", *session.posargs)


@nox.session(name="bench-agent-loop", python=PYTHON, default=False, tags=["bench"])
def bench_agent_loop(session: nox.Session) -> None:
    """The agent operator's loop through the runtime vs plain threads (EMULATED engine)."""
    _install_project(session, "bench")
    session.run("python", "bench/agent_loop_bench.py", *session.posargs)


@nox.session(name="bench-admission", python=PYTHON, default=False, tags=["bench"])
def bench_admission(session: nox.Session) -> None:
    """Concurrent pipelines under immediate/staggered/utilisation admission."""
    _install_project(session, "bench")
    session.run("python", "bench/admission_bench.py", *session.posargs)


@nox.session(
    name="bench-mixed",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
    tags=["bench"],
)
def bench_mixed(session: nox.Session) -> None:
    """Mixed LLM + embedding traffic on EMULATED devices: siloed vs unified per policy."""
    _install_project(session, "bench")
    session.run("python", "bench/mixed_emu_bench.py", *session.posargs)


@nox.session(
    name="bench-mixed-cpu",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
    tags=["bench"],
)
def bench_mixed_cpu(session: nox.Session) -> None:
    """Mixed LLM + embedding workload on real vLLM CPU engines: hybrid/fifo/siloed."""
    _install_inference_bench(session)
    _run_inference_bench(session, "bench-mixed-cpu")


@nox.session(
    name="bench-emulator-fit",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
    tags=["bench"],
)
def bench_emulator_fit(session: nox.Session) -> None:
    """Fit an emulator profile to the real CPU engines and validate it under load."""
    _install_inference_bench(session)
    _run_inference_bench(session, "bench-emulator-fit")


# The benchmarks on real engines (vLLM CPU, MiniLM) share one way to install and run,
# so `bench-smoke-inference` can check all of them in one virtualenv (CI's time).
INFERENCE_BENCHES = {
    "bench-mixed-cpu": [
        "bench/mixed_bench.py",
        "--out",
        "bench/results/mixed-cpu.json",
    ],
    "bench-index": ["bench/bench_index.py", "--out", "bench/results/index.json"],
    "bench-rag": ["bench/rag_bench.py", "--out", "bench/results/rag.json"],
    "bench-memory": ["bench/memory_bench.py", "--out", "bench/results/memory.json"],
    "bench-agent": ["bench/agent_bench.py", "--out", "bench/results/agent.json"],
    "bench-diagnosis-rag": [
        "bench/diagnosis_rag.py",
        "--out",
        "bench/results/diagnosis_rag.json",
    ],
    "bench-emulator-fit": [
        "bench/emulator_fit_bench.py",
        "--out",
        "bench/results/emulator_fit.json",
    ],
}


def _install_inference_bench(session: nox.Session) -> None:
    _install_inference(session)
    session.install(*nox.project.dependency_groups(PYPROJECT, "bench"))


def _run_inference_bench(session: nox.Session, name: str, *extra: str) -> None:
    args = [*INFERENCE_BENCHES[name], *extra, *session.posargs]
    session.run("python", *args, env=INFERENCE_ENV)


@nox.session(
    name="bench-smoke-inference",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
)
def bench_smoke_inference(session: nox.Session) -> None:
    """Every benchmark on real engines at smoke sizes in one virtualenv (CI)."""
    _install_inference_bench(session)
    for name in INFERENCE_BENCHES:
        _run_inference_bench(session, name, "--smoke")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, import-linter contracts and mypy on sage_core."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.install(*PYPROJECT["project"]["dependencies"])
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")
    session.run("mypy")


@nox.session(name="bench-diagnosis", python=PYTHON, default=False, tags=["bench"])
def bench_diagnosis(session: nox.Session) -> None:
    """What-if predicted vs measured counterfactuals, attribution on injected
    bottlenecks (JSON + PNG)."""
    _install_project(session, "bench")
    session.run("python", "bench/diagnosis_bench.py", *session.posargs)


@nox.session(name="bench-dispatch-replay", python=PYTHON, default=False, tags=["bench"])
def bench_dispatch_replay(session: nox.Session) -> None:
    """Dispatch replay of a recorded gateway run vs the real runs of other request
    policies, on an emulated engine (JSON + PNG)."""
    _install_project(session, "bench")
    session.run("python", "bench/dispatch_replay_bench.py", *session.posargs)


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
    _install_inference_bench(session)
    _run_inference_bench(session, "bench-index")


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


@nox.session(name="bench-recovery", python=PYTHON, default=False, tags=["bench"])
def bench_recovery(session: nox.Session) -> None:
    """Checkpoint cost (off vs 1 s vs 10 s), duration vs state size, recovery time
    (local operator failure; Dask kill -9 of a worker)."""
    _install_project(session, "bench")
    session.run(
        "python",
        "bench/recovery_bench.py",
        "--out",
        "bench/results/recovery.json",
        *session.posargs,
    )


@nox.session(
    name="bench-memory",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
    tags=["bench"],
)
def bench_memory(session: nox.Session) -> None:
    """Memory recall@k of turn-1 facts (MiniLM vs hash embedder), context latency."""
    _install_inference_bench(session)
    _run_inference_bench(session, "bench-memory")


@nox.session(
    name="bench-agent",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
    tags=["bench"],
)
def bench_agent(session: nox.Session) -> None:
    """Tool-selection top-1/top-5: MiniLM vs BM25 vs fusion on a 540-tool catalog."""
    _install_inference_bench(session)
    _run_inference_bench(session, "bench-agent")


@nox.session(name="bench-live", python=PYTHON, default=False, tags=["bench"])
def bench_live(session: nox.Session) -> None:
    """Live collection: changes/s, query latency while writing, staleness (JSON+PNG)."""
    _install_project(session, "bench")
    session.run(
        "python",
        "bench/live_bench.py",
        "--out",
        "bench/results/live.json",
        *session.posargs,
    )


@nox.session(name="bench-windows", python=PYTHON, default=False, tags=["bench"])
def bench_windows(session: nox.Session) -> None:
    """Event-time windows and interval join vs Bytewax windowing (JSON+PNG)."""
    _install_project(session, "bench")
    session.run(
        "python",
        "bench/windows_bench.py",
        "--out",
        "bench/results/windows.json",
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
    _install_inference_bench(session)
    _run_inference_bench(session, "bench-rag")


@nox.session(
    name="bench-diagnosis-rag",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
    tags=["bench"],
)
def bench_diagnosis_rag(session: nox.Session) -> None:
    """What-if predictions against runs of RAG and MIXED pipelines on real engines."""
    _install_inference_bench(session)
    _run_inference_bench(session, "bench-diagnosis-rag")


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
