"""Approximate indexes of the vector-index benchmark: builds and recall/QPS sweeps.

Four systems, each swept over its search-breadth knob: native IVF and FAISS
``IndexIVFFlat`` (the same nlist, k-means iterations, training sample bound and
nprobe values: the like-for-like pair), hnswlib (ef) and usearch (expansion_search).
Searches run on one thread, the whole query batch per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from common import spread
from index_sets import DataSet, Matrix
from index_timing import measure, pinned

from sage_core.vector_index import create_index

K = 10
TARGETS = (0.90, 0.95, 0.99)
NPROBES = [1, 2, 4, 8, 16, 32, 64, 128]
EFS = [10, 16, 32, 64, 128, 256, 512]
KNOB = {
    "native-ivf": "nprobe",
    "faiss-ivf": "nprobe",
    "hnswlib": "ef",
    "usearch": "expansion_search",
}
TRAIN_ITERS = 10  # native IVF's default; FAISS is set to the same
POINTS_PER_LIST = 256  # both train on at most 256 * nlist vectors


@dataclass
class Built:
    """One built index: how to set its knob and search, and its build time."""

    search: Callable[[Matrix], Any]
    set_knob: Callable[[int], None]
    build_s: float


def exact_top_k(x: Matrix, q: Matrix, k: int) -> np.ndarray:
    """Ground truth: inner-product top-k by numpy (rows are normalised)."""
    s = q @ x.T
    top = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true k nearest found, over all queries."""
    hits = sum(
        len(set(g.tolist()) & set(t.tolist())) for g, t in zip(got, truth, strict=True)
    )
    return hits / truth.size


def build(name: str, x: Matrix, nlist: int, threads: int) -> Built:
    """Build `name` over `x` with `threads` threads and set it to search on one."""
    dim = x.shape[1]
    ids = np.arange(len(x), dtype=np.uint64)
    with pinned(threads):
        t = time.perf_counter()
        if name == "faiss-ivf":
            import faiss

            quantizer = faiss.IndexFlatIP(dim)
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.cp.niter = TRAIN_ITERS
            ivf.cp.max_points_per_centroid = POINTS_PER_LIST
            ivf.cp.seed = 1
            ivf.train(x)
            ivf.add(x)
            took = time.perf_counter() - t

            def set_nprobe(v: int) -> None:
                ivf.nprobe = v

            return Built(lambda q: ivf.search(q, K)[1], set_nprobe, took)
        options: dict[str, Any] = {"threads": threads}
        if name == "native-ivf":
            options.update(nlist=nlist, seed=1, train_iters=TRAIN_ITERS)
        if name == "hnswlib":
            options.update(capacity=len(x))
        index: Any = create_index(name, dim=dim, metric="ip", **options)
        index.add(ids, x)
        took = time.perf_counter() - t
    index.threads = 1

    def set_knob(v: int) -> None:
        if name == "native-ivf":
            index.nprobe = v
        elif name == "hnswlib":
            index._opts["ef"] = v
            index._impl.set_ef(v)
        else:
            index._impl.expansion_search = v

    return Built(lambda q: index.search(q, K)[0], set_knob, took)


def knob_values(name: str, nlist: int) -> list[int]:
    """The sweep of a system: nprobe up to nlist for IVF, ef/expansion otherwise."""
    if KNOB[name] == "nprobe":
        return [v for v in NPROBES if v <= nlist]
    return EFS


def sweep(
    ds: DataSet, systems: list[str], nlist: int, args: Any
) -> dict[str, dict[str, Any]]:
    """Recall/QPS curve of every system on `ds`, all points timed interleaved."""
    truth = exact_top_k(ds.base, ds.queries, K)
    reps = max(1, -(-args.min_timed_queries // len(ds.queries)))
    timed_q = np.ascontiguousarray(np.tile(ds.queries, (reps, 1)))
    out: dict[str, dict[str, Any]] = {}
    points: dict[str, tuple[Callable[[], Any], int, int]] = {}
    for name in systems:
        index = build(name, ds.base, nlist, args.build_threads)
        curve = []
        for value in knob_values(name, nlist):
            index.set_knob(value)
            with pinned(1):
                r = recall(np.asarray(index.search(ds.queries)), truth)
            curve.append({KNOB[name]: value, "recall": r})

            def call(v: int = value, idx: Built = index) -> None:
                idx.set_knob(v)
                idx.search(timed_q)

            points[f"{name}@{value}"] = (call, len(timed_q), 1)
            if r >= 0.995:
                break
        out[name] = {"build_s": index.build_s, "knob": KNOB[name], "curve": curve}
    runs = measure(points, args.repeats, args.min_time)
    for name, res in out.items():
        for p in res["curve"]:
            run = runs[f"{name}@{p[KNOB[name]]}"]
            p["qps"] = spread(run["qps"])
            p["qps_cpu"] = spread(run["qps_cpu"])
            p["qps_cpu_runs"] = run["qps_cpu"]
        res["at_recall"] = {
            f"{t:.2f}": best_at(res["curve"], t, KNOB[name]) for t in TARGETS
        }
    return out


def best_at(curve: list[dict[str, Any]], target: float, knob: str) -> Any:
    """The fastest point (CPU-time QPS) reaching `target` recall, or None."""
    ok = [p for p in curve if p["recall"] >= target]
    if not ok:
        return None
    p = max(ok, key=lambda p: p["qps_cpu"]["median"])
    return {knob: p[knob], "recall": p["recall"], "qps_cpu": p["qps_cpu"]["median"]}


def ivf_pair(ann: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Native IVF over FAISS IVF at each equal nprobe: median of per-round ratios."""
    if "native-ivf" not in ann or "faiss-ivf" not in ann:
        return {}
    theirs = {p["nprobe"]: p for p in ann["faiss-ivf"]["curve"]}
    out = {}
    for p in ann["native-ivf"]["curve"]:
        q = theirs.get(p["nprobe"])
        if q is None:
            continue
        per_round = [
            a / b for a, b in zip(p["qps_cpu_runs"], q["qps_cpu_runs"], strict=True)
        ]
        out[str(p["nprobe"])] = {
            "qps_cpu_ratio": spread(per_round),
            "recall_native": p["recall"],
            "recall_faiss": q["recall"],
        }
    return out


def at_recall_ratios(ann: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Native IVF's best CPU-time QPS at each recall target over each peer's."""
    out: dict[str, dict[str, float]] = {}
    ours = ann.get("native-ivf")
    if ours is None:
        return out
    for target in (f"{t:.2f}" for t in TARGETS):
        a = ours["at_recall"][target]
        for peer, res in ann.items():
            b = res["at_recall"][target]
            if peer != "native-ivf" and a and b:
                out.setdefault(target, {})[peer] = a["qps_cpu"] / b["qps_cpu"]
    return out
