# /// script
# dependencies = ["nox>=2024.10"]
# ///
"""Development sessions: tests, lint, benchmarks and stubs.

``nox`` runs the defaults (tests, lint); ``nox -t bench`` runs every benchmark.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import nox

nox.needs_version = ">=2024.10"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"
# CI builds the project's wheel once and every session installs that same file;
# elsewhere each session builds the checkout
PROJECT = os.environ.get("SAGE_WHEEL") or "."


def _install_project(session: nox.Session, *groups: str) -> None:
    deps = [
        dep
        for group in groups
        for dep in nox.project.dependency_groups(PYPROJECT, group)
    ]
    if deps:
        session.install(*deps)
    session.install(PROJECT)


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
    _inference_tests(session, session.posargs)


def _inference_tests(session: nox.Session, extra: list[str]) -> None:
    session.run(
        "pytest", "-m", "inference", "--timeout=1200", *extra, env=INFERENCE_ENV
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


# Benchmarks. Each has a session of its own (tag "bench"); `bench-smoke` and
# `bench-smoke-inference` run them all at smoke sizes, each in one virtualenv, so CI
# checks that none has rotted without building the project twenty times. Smoke runs
# write only bench/results/*-smoke.* (git-ignored), never the committed figures.


# how a benchmark runs, given the session and the arguments to pass on
Bench = Callable[[nox.Session, list[str]], None]


def _script(*args: str) -> Bench:
    def run(session: nox.Session, extra: list[str]) -> None:
        session.run("python", *args, *extra)

    return run


def _queue_bench(session: nox.Session, extra: list[str]) -> None:
    smoke = "--smoke" in extra
    raw = "bench/results/queue-smoke.json" if smoke else "bench/results/queue.json"
    session.run(
        "pytest",
        "bench/test_queue.py",
        "--benchmark-only",
        f"--benchmark-json={raw}",
        "-p",
        "no:cacheprovider",
        *extra,
    )
    session.run("python", "bench/queue_report.py", raw, *(["--smoke"] if smoke else []))


# name -> (what it measures, how it runs); these need the project and the bench group
BENCHES: dict[str, tuple[str, Bench]] = {
    "bench-queue": (
        "Queue hand-off items/s vs queue.Queue (items, lists) and a deque (JSON + PNG).",
        _queue_bench,
    ),
    "bench-gateway": (
        "Gateway added latency and requests/s over a trivial engine, same run.",
        _script("bench/gateway_bench.py"),
    ),
    "bench-runtime": (
        "COMPUTE pipeline: local runtime vs for-loops, threads+Queue, Bytewax (JSON+PNG).",
        _script("bench/runtime_bench.py", "--out", "bench/results/runtime.json"),
    ),
    "bench-dask": (
        "COMPUTE on 2 worker processes: SAGE vs pipelined Dask and Ray actors (JSON+PNG).",
        _script("bench/dask_bench.py", "--out", "bench/results/dask.json"),
    ),
    "bench-policies": (
        "MIXED workload on 4 single-thread workers under each placement policy.",
        _script("bench/policies_bench.py", "--out", "bench/results/policies.json"),
    ),
    "bench-recovery": (
        (
            "Checkpoint cost (off vs 1 s vs 10 s), duration vs state size, recovery time "
            "(local operator failure; Dask kill -9 of a worker)."
        ),
        _script("bench/recovery_bench.py", "--out", "bench/results/recovery.json"),
    ),
    "bench-serve": (
        "A served pipeline vs a hand-written asyncio service: Poisson load, p50/p99.",
        _script("bench/serve_bench.py"),
    ),
    "bench-autoscale": (
        "Served pipeline under overload: fixed 1 / 4 replicas vs autoscaling (in place, roll).",
        _script("bench/autoscale_bench.py"),
    ),
    "bench-admission": (
        "Concurrent pipelines under immediate/staggered/utilisation admission.",
        _script("bench/admission_bench.py"),
    ),
    "bench-diagnosis": (
        (
            "What-if predicted vs measured counterfactuals, attribution on injected "
            "bottlenecks (JSON + PNG)."
        ),
        _script("bench/diagnosis_bench.py"),
    ),
    "bench-dispatch-replay": (
        (
            "Dispatch replay of a recorded gateway run vs the real runs of other request "
            "policies, on an emulated engine (JSON + PNG)."
        ),
        _script("bench/dispatch_replay_bench.py"),
    ),
    "bench-windows": (
        "Event-time windows and interval join vs Bytewax windowing (JSON+PNG).",
        _script("bench/windows_bench.py", "--out", "bench/results/windows.json"),
    ),
    "bench-live": (
        "Live collection: changes/s, query latency while writing, staleness (JSON+PNG).",
        _script("bench/live_bench.py", "--out", "bench/results/live.json"),
    ),
    "bench-mixed": (
        "Mixed LLM + embedding traffic on EMULATED devices: siloed vs unified per policy.",
        _script("bench/mixed_emu_bench.py"),
    ),
    "bench-mixed-saturation": (
        "Load each layout sustains within p95 targets on EMULATED devices: siloed vs unified.",
        _script("bench/mixed_saturation.py"),
    ),
    "bench-agent-loop": (
        "The agent operator's loop through the runtime vs plain threads (EMULATED engine).",
        _script("bench/agent_loop_bench.py"),
    ),
}

# these also need the real engines: the vLLM CPU lock, the packaged MiniLM
INFERENCE_BENCHES: dict[str, tuple[str, Bench]] = {
    "bench-mixed-cpu": (
        "Mixed LLM + embedding workload on real vLLM CPU engines: hybrid/fifo/siloed.",
        _script("bench/mixed_bench.py", "--out", "bench/results/mixed-cpu.json"),
    ),
    "bench-index": (
        "Vector indexes vs numpy, FAISS (flat, IVF), hnswlib, usearch: recall/QPS curves.",
        _script("bench/bench_index.py", "--out", "bench/results/index.json"),
    ),
    "bench-rag": (
        "RAG pipeline on real engines: local/Dask runtimes vs the stages in a loop.",
        _script("bench/rag_bench.py", "--out", "bench/results/rag.json"),
    ),
    "bench-memory": (
        "Memory recall@k of turn-1 facts (MiniLM vs hash embedder), context latency.",
        _script("bench/memory_bench.py", "--out", "bench/results/memory.json"),
    ),
    "bench-agent": (
        "Tool-selection top-1/top-5: MiniLM vs BM25 vs fusion on a 540-tool catalog.",
        _script("bench/agent_bench.py", "--out", "bench/results/agent.json"),
    ),
    "bench-diagnosis-rag": (
        "What-if predictions against runs of RAG and MIXED pipelines on real engines.",
        _script("bench/diagnosis_rag.py", "--out", "bench/results/diagnosis_rag.json"),
    ),
    "bench-emulator-fit": (
        "Fit an emulator profile to the real CPU engines and validate it under load.",
        _script(
            "bench/emulator_fit_bench.py", "--out", "bench/results/emulator_fit.json"
        ),
    ),
}


# peers measured in a benchmark's own run, never package dependencies
PEERS = {"bench-dask": ["ray>=2.40"]}


def _install_bench(session: nox.Session, *names: str) -> None:
    _install_project(session, "bench")
    peers = [peer for name in names for peer in PEERS.get(name, [])]
    if peers:
        session.install(*peers)


def _install_inference_bench(session: nox.Session) -> None:
    """The inference venv plus the bench group; later commands see INFERENCE_ENV."""
    _install_inference(session)
    session.install(*nox.project.dependency_groups(PYPROJECT, "bench"))
    session.env.update(INFERENCE_ENV)


def _bench_session(name: str, doc: str, run: Bench, inference: bool) -> None:
    def bench(session: nox.Session) -> None:
        if inference:
            _install_inference_bench(session)
        else:
            _install_bench(session, name)
        run(session, session.posargs)

    bench.__doc__ = doc
    backend = {"venv_backend": "virtualenv"} if inference else {}
    nox.session(name=name, python=PYTHON, default=False, tags=["bench"], **backend)(
        bench
    )


for _name, (_doc, _run) in BENCHES.items():
    _bench_session(_name, _doc, _run, inference=False)
for _name, (_doc, _run) in INFERENCE_BENCHES.items():
    _bench_session(_name, _doc, _run, inference=True)


def _smoke(session: nox.Session, benches: dict[str, tuple[str, Bench]]) -> None:
    for name, (_doc, run) in benches.items():
        start = time.monotonic()
        run(session, ["--smoke", *session.posargs])
        session.log(f"{name} --smoke took {time.monotonic() - start:.0f} s")


@nox.session(name="bench-smoke", python=PYTHON, default=False)
def bench_smoke(session: nox.Session) -> None:
    """Every benchmark without real engines, at smoke sizes, in one virtualenv (CI)."""
    _install_bench(session, *BENCHES)
    _smoke(session, BENCHES)


@nox.session(
    name="bench-smoke-inference",
    python=PYTHON,
    venv_backend="virtualenv",
    default=False,
)
def bench_smoke_inference(session: nox.Session) -> None:
    """Every benchmark on real engines at smoke sizes in one virtualenv (CI)."""
    _install_inference_bench(session)
    _smoke(session, INFERENCE_BENCHES)


@nox.session(
    name="ci-inference", python=PYTHON, venv_backend="virtualenv", default=False
)
def ci_inference(session: nox.Session) -> None:
    """tests-inference, then bench-smoke-inference, in one virtualenv (CI: one install
    of the vLLM CPU lock)."""
    _install_inference_bench(session)
    _inference_tests(session, [])
    _smoke(session, INFERENCE_BENCHES)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, import-linter contracts and mypy on sage_core."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.install(*PYPROJECT["project"]["dependencies"])
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")
    session.run("mypy")


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
