"""Timing for the vector-index benchmark: pinned threads, interleaved repeats.

Two runs of the old benchmark disagreed up to 10x on the same machine. The causes, and
what this module does about each:

* thread pools left at their defaults: FAISS's OpenMP and numpy's BLAS each start a
  thread per core, so a "1 thread" figure could run several and a "2 threads" figure
  fought the other library's idle pool. Every call here runs under ``pinned(threads)``,
  which sets FAISS's OpenMP count and limits every BLAS/OpenMP pool (threadpoolctl);
* OpenMP workers spinning after a parallel region (libgomp's default wait policy)
  steal a core of a 2-core machine from whatever runs next: the benchmark sets
  ``OMP_WAIT_POLICY=PASSIVE`` before numpy or FAISS load (``configure_env``);
* FAISS's wheel bundles an old OpenBLAS (0.3.15) that does not know newer Xeons and
  falls back to its generic "Prescott" kernels there: FAISS IVF's coarse quantizer
  (one sgemm) then ran 3x slower than with the AVX-512 kernels numpy's own OpenBLAS
  picks on the same CPU, and native IVF looked 3x faster than FAISS. The benchmark
  sets ``OPENBLAS_CORETYPE`` from the CPU's flags (SkylakeX with AVX-512, Haswell
  with AVX2) before FAISS loads, and the JSON records each BLAS pool's kernels;
* one system measured after another, so load from other processes hit whichever ran
  during a busy minute: repeats are interleaved (every point once per round, rounds
  repeated), every point is warmed up first, and each figure is the median of the
  rounds with its min-max spread. Single-thread figures also count process CPU time,
  which other processes stretch far less than wall time;
* figures timed over one call of a few milliseconds: each figure repeats its call
  for at least ``min_s`` (0.2 s; ``--min-time``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

WAIT_POLICY = "PASSIVE"


def configure_env() -> None:
    """Make idle OpenMP threads sleep and give every OpenBLAS the kernels this CPU
    supports; call before numpy or FAISS is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    core = blas_core_type()
    if core:
        os.environ.setdefault("OPENBLAS_CORETYPE", core)


def blas_core_type(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The OpenBLAS kernel family this CPU's flags allow (None: leave it to
    OpenBLAS's own detection)."""
    try:
        with open(cpuinfo) as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return None
    flags = set(line.partition(":")[2].split())
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


@contextlib.contextmanager
def pinned(threads: int) -> Iterator[None]:
    """Run the body with FAISS's OpenMP and every BLAS pool at `threads` threads."""
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(threads)
    with threadpool_limits(limits=threads):
        yield


def thread_settings() -> dict[str, Any]:
    """Environment and thread pools as the benchmark sees them (for the JSON)."""
    from threadpoolctl import threadpool_info

    keys = (
        "OMP_WAIT_POLICY",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "OPENBLAS_CORETYPE",
    )
    return {
        "env": {k: os.environ.get(k) for k in keys},
        "pools": [
            {
                k: p.get(k)
                for k in ("internal_api", "num_threads", "version", "architecture")
            }
            for p in threadpool_info()
        ],
    }


def measure(
    points: dict[str, tuple[Callable[[], Any], int, int]],
    repeats: int,
    min_s: float = 0.2,
) -> dict[str, dict[str, Any]]:
    """Time every point once per round, `repeats` rounds, after one warm-up each.

    A point's figure in a round comes from calling it again and again for at least
    `min_s` seconds (as ``timeit``'s autorange does): a fast index answers 1000
    queries in a few milliseconds, a window in which one timer interrupt or
    descheduling moves the figure by tens of percent.

    Args:
        points: name -> (call, queries answered by one call, threads).
        repeats: rounds.
        min_s: the least wall time one figure is measured over.

    Returns:
        name -> {"qps": [...], "qps_cpu": [...]} per round (CPU time only counted
        for single-thread points, where it measures the work itself).
    """
    for fn, _, threads in points.values():
        with pinned(threads):
            fn()
    runs: dict[str, dict[str, Any]] = {
        name: {"qps": [], "qps_cpu": [] if threads == 1 else None}
        for name, (_, _, threads) in points.items()
    }
    for _ in range(repeats):
        for name, (fn, n, threads) in points.items():
            with pinned(threads):
                calls = 0
                c, t = time.process_time(), time.perf_counter()
                while True:
                    fn()
                    calls += 1
                    wall = time.perf_counter() - t
                    if wall >= min_s:
                        break
                cpu = time.process_time() - c
            runs[name]["qps"].append(n * calls / wall)
            if threads == 1:
                runs[name]["qps_cpu"].append(n * calls / max(cpu, 1e-9))
    return runs
