"""Vector-index benchmark: native FlatIndex/IVFIndex against numpy, FAISS, hnswlib, usearch.

Data: clustered float32 vectors (Gaussian blobs, rows normalised so ip == cos), a
fixed seed, queries from the same blobs; ground truth by numpy. Every figure is the
median of --repeats runs taken in this process, peers in the same run.

* exact: build time, memory, QPS at batch 1 and 1000 with 1 and 2 threads for the
  native FlatIndex, numpy (matmul + argpartition) and FAISS IndexFlatIP;
* approximate: build time, then QPS (batch of all queries, 1 thread) against
  recall@10 over a sweep of nprobe / ef; reported at recall >= 0.90 / 0.95 / 0.99.

    nox -s bench-index -- --n 100000 --dims 128 384
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from sage_core.channels import build_info
from sage_core.vector_index import FlatIndex, create_index

K = 10
TARGETS = (0.90, 0.95, 0.99)


def clustered(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)]
    x += rng.standard_normal((n, dim)).astype(np.float32) * 0.6
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `repeats` calls (after one warm-up call)."""
    return median_times(fn, repeats)[0]


def median_times(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall time and median process CPU time of `repeats` calls.

    On a shared machine other processes stretch wall time; for single-threaded runs
    the process CPU time is the steadier figure (both are reported).
    """
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(
        len(set(g.tolist()) & set(t.tolist())) for g, t in zip(got, truth, strict=True)
    )
    return hits / truth.size


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def numpy_search(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q @ x.T
    top = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def exact(x: np.ndarray, q: np.ndarray, truth: np.ndarray, args: Any) -> dict[str, Any]:
    import faiss
    from threadpoolctl import threadpool_limits

    dim = x.shape[1]
    ids = np.arange(len(x), dtype=np.uint64)
    out: dict[str, Any] = {}
    before = rss()
    t = time.perf_counter()
    flat = FlatIndex(dim, "ip")
    flat.add(ids, x)
    build = {"native-flat": time.perf_counter() - t}
    memory = {"native-flat": flat.memory_bytes(), "native-flat-rss": rss() - before}
    before = rss()
    t = time.perf_counter()
    fx = faiss.IndexFlatIP(dim)
    fx.add(x)
    build["faiss-flat"] = time.perf_counter() - t
    memory["faiss-flat-rss"] = rss() - before
    memory["numpy"] = x.nbytes
    out["build_s"] = build
    out["memory_bytes"] = memory
    assert recall(flat.search(q[:100], K)[0], truth[:100]) == 1.0
    qps: dict[str, float] = {}
    qps_cpu: dict[str, float] = {}
    for threads in (1, 2):
        flat.threads = threads
        faiss.omp_set_num_threads(threads)
        with threadpool_limits(threads):
            for batch in (1, 1000):
                qb = q[:batch]
                singles = q[: args.single_queries]
                if batch == 1:

                    def run_native(s: np.ndarray = singles) -> None:
                        for row in s:
                            flat.search(row[None, :], K)

                    def run_faiss(s: np.ndarray = singles) -> None:
                        for row in s:
                            fx.search(row[None, :], K)

                    def run_numpy(s: np.ndarray = singles) -> None:
                        for row in s:
                            numpy_search(x, row[None, :], K)

                    n = len(singles)
                else:

                    def run_native(s: np.ndarray = qb) -> None:
                        flat.search(s, K)

                    def run_faiss(s: np.ndarray = qb) -> None:
                        fx.search(s, K)

                    def run_numpy(s: np.ndarray = qb) -> None:
                        numpy_search(x, s, K)

                    n = batch
                for name, fn in (
                    ("native-flat", run_native),
                    ("faiss-flat", run_faiss),
                    ("numpy", run_numpy),
                ):
                    wall, cpu = median_times(fn, args.repeats)
                    key = f"{name}/batch{batch}/threads{threads}"
                    qps[key] = n / wall
                    if threads == 1:
                        qps_cpu[key] = n / cpu
    out["qps"] = qps
    out["qps_cpu"] = qps_cpu
    out["recall_native_flat"] = recall(flat.search(q, K)[0], truth)
    return out


SWEEPS: dict[str, tuple[str, list[int]]] = {
    "native-ivf": ("nprobe", [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128]),
    "hnswlib": ("ef", [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]),
    "usearch": ("expansion_search", [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384]),
}


def approximate(
    name: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, args: Any
) -> dict[str, Any]:
    dim = x.shape[1]
    ids = np.arange(len(x), dtype=np.uint64)
    options: dict[str, Any] = {"threads": args.build_threads}
    if name == "native-ivf":
        options.update(nlist=args.nlist, seed=1)
    if name == "hnswlib":
        options.update(capacity=len(x))
    builds = []
    grown = 0
    index: Any = None
    for _ in range(args.build_repeats):
        index = None
        before = rss()
        t = time.perf_counter()
        index = create_index(name, dim=dim, metric="cos", **options)
        index.add(ids, x)
        builds.append(time.perf_counter() - t)
        grown = rss() - before
    index.threads = 1
    param, values = SWEEPS[name]
    curve = []
    for value in values:
        if name == "native-ivf":
            index.nprobe = value
        elif name == "hnswlib":
            index._opts["ef"] = value
            index._impl.set_ef(value)
        else:
            index._impl.expansion_search = value
        found = index.search(q, K)[0]
        r = recall(found, truth)
        wall, cpu = median_times(lambda: index.search(q, K), args.repeats)
        curve.append(
            {param: value, "recall": r, "qps": len(q) / wall, "qps_cpu": len(q) / cpu}
        )
        if r >= 0.995:
            break
    at = {}
    for target in TARGETS:
        ok = [p for p in curve if p["recall"] >= target]
        at[f"{target:.2f}"] = max(ok, key=lambda p: p["qps_cpu"]) if ok else None
    return {
        "build_s": statistics.median(builds),
        "build_runs": builds,
        "rss_growth_bytes": grown,
        "curve": curve,
        "at_recall": at,
    }


def run_dim(dim: int, args: Any) -> dict[str, Any]:
    x = clustered(args.n, dim, seed=dim)
    q = clustered(args.queries, dim, seed=dim + 10_000)
    truth = numpy_search(x, q, K)
    result: dict[str, Any] = {"n": args.n, "dim": dim, "queries": args.queries}
    result["exact"] = exact(x, q, truth, args)
    result["approximate"] = {
        name: approximate(name, x, q, truth, args) for name in args.ann
    }
    return result


def ratios(res: dict[str, Any]) -> dict[str, float]:
    qps = res["exact"]["qps"]
    cpu = res["exact"]["qps_cpu"]
    out = {
        "flat_vs_faiss_batch1000_threads1_cpu": cpu["native-flat/batch1000/threads1"]
        / cpu["faiss-flat/batch1000/threads1"],
        "flat_vs_numpy_batch1_threads1_cpu": cpu["native-flat/batch1/threads1"]
        / cpu["numpy/batch1/threads1"],
        "flat_vs_faiss_batch1000_threads1": qps["native-flat/batch1000/threads1"]
        / qps["faiss-flat/batch1000/threads1"],
        "flat_vs_faiss_batch1000_threads2": qps["native-flat/batch1000/threads2"]
        / qps["faiss-flat/batch1000/threads2"],
        "flat_vs_numpy_batch1_threads1": qps["native-flat/batch1/threads1"]
        / qps["numpy/batch1/threads1"],
        "flat_vs_numpy_batch1_threads2": qps["native-flat/batch1/threads2"]
        / qps["numpy/batch1/threads2"],
    }
    ann = res["approximate"]
    if "native-ivf" in ann and "hnswlib" in ann:
        ivf, hnsw = ann["native-ivf"], ann["hnswlib"]
        a, b = ivf["at_recall"]["0.95"], hnsw["at_recall"]["0.95"]
        if a and b:
            out["ivf_vs_hnswlib_qps_at_0.95"] = a["qps"] / b["qps"]
            out["ivf_vs_hnswlib_cpu_qps_at_0.95"] = a["qps_cpu"] / b["qps_cpu"]
        for target in ("0.90", "0.99"):
            a, b = ivf["at_recall"][target], hnsw["at_recall"][target]
            if a and b:
                out[f"ivf_vs_hnswlib_cpu_qps_at_{target}"] = a["qps_cpu"] / b["qps_cpu"]
        out["ivf_vs_hnswlib_insert_speed"] = hnsw["build_s"] / ivf["build_s"]
    if "native-ivf" in ann and "usearch" in ann:
        out["ivf_vs_usearch_insert_speed"] = (
            ann["usearch"]["build_s"] / ann["native-ivf"]["build_s"]
        )
    return out


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5))
    axes = np.atleast_1d(axes)
    for ax, res in zip(axes, results, strict=True):
        for name, ann in res["approximate"].items():
            ax.plot(
                [p["recall"] for p in ann["curve"]],
                [p["qps_cpu"] for p in ann["curve"]],
                marker="o",
                label=f"{name} (build {ann['build_s']:.1f} s)",
            )
        flat = res["exact"]["qps_cpu"]["native-flat/batch1000/threads1"]
        faiss_qps = res["exact"]["qps_cpu"]["faiss-flat/batch1000/threads1"]
        ax.axhline(flat, ls="--", color="k", label="native-flat (exact)")
        ax.axhline(faiss_qps, ls=":", color="grey", label="faiss flat (exact)")
        ax.set_xscale("logit")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("QPS by CPU time (1 thread, batch of all queries)")
        ax.set_title(f"{res['n']:,} x {res['dim']} clustered")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 384])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single-queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--build-repeats", type=int, default=1)
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--ann", nargs="*", default=list(SWEEPS))
    parser.add_argument("--out", type=Path, default=Path("bench/results/index.json"))
    args = parser.parse_args()
    results = []
    for dim in args.dims:
        res = run_dim(dim, args)
        res["ratios"] = ratios(res)
        results.append(res)
        print(f"\n== {args.n} x {dim} ==")
        for key, value in res["exact"]["qps"].items():
            by_cpu = res["exact"]["qps_cpu"].get(key)
            extra = f"  (CPU-time QPS {by_cpu:,.1f})" if by_cpu else ""
            print(f"  QPS {key:<36} {value:>10,.1f}{extra}")
        print(f"  build (s): {res['exact']['build_s']}")
        for name, ann in res["approximate"].items():
            at = {t: (p and round(p["qps_cpu"])) for t, p in ann["at_recall"].items()}
            print(
                f"  {name:<11} build {ann['build_s']:.2f} s, CPU-time QPS at recall: {at}"
            )
        for key, value in res["ratios"].items():
            print(f"  ratio {key:<40} {value:.2f}")
    payload = {
        "machine": {
            "platform": platform.platform(),
            "cpus": psutil.cpu_count(),
            "sage_build": build_info(),
        },
        "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
