"""Live-collection benchmark: writes/s, query latency while writing, staleness.

A writer thread streams batches of 64 changes (80% adds/updates of 384-d vectors,
20% deletes, over a growing id space) into a live collection while a reader thread
searches it (top-10) with ``max_staleness_ms``. Measured in the same run: query
latency of the same reader with no writer (the baseline), then with the writer;
changes written per second; the reported ``staleness_ms`` of every answer (p50/p99)
and the visibility lag: for each answer, how long ago the newest change missing from
its view was committed (0 when the view was complete), p99.

    python bench/live_bench.py --out bench/results/live.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    add_smoke_flag,
    machine_info,
    percentile,
    pyplot,
    smoke_path,
    write_report,
)

from sage_plugins.rag.live import LiveReader, LiveWriter

DIM, BATCH, K = 384, 64, 10


def _changes(rng: np.random.Generator, start: int) -> list[dict[str, Any]]:
    out = []
    for i in range(BATCH):
        doc = f"d{int(rng.integers(0, start + i + 1))}"
        if rng.random() < 0.2:
            out.append({"id": doc, "delete": True})
        else:
            out.append({"id": doc, "text": doc, "embedding": rng.standard_normal(DIM)})
    return out


def _query(
    reader: LiveReader, rng: np.random.Generator, n: int
) -> tuple[list[float], list[dict[str, Any]]]:
    lat, answers = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        got = reader.search(rng.standard_normal(DIM), K)
        lat.append(time.perf_counter() - t0)
        answers.append(
            {"t": time.time(), "seq": got["seq"], "staleness_ms": got["staleness_ms"]}
        )
    return lat, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/live.json"))
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--max-staleness-ms", type=float, default=50.0)
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.batches, args.queries = 30, 200
        args.out = smoke_path(args.out)
    rng = np.random.default_rng(0)
    before = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        writer = LiveWriter("bench", root=tmp)
        for b in range(args.batches // 3):  # a collection to start from
            writer.write(_changes(rng, b * BATCH))
        reader = LiveReader("bench", root=tmp, max_staleness_ms=args.max_staleness_ms)
        reader.refresh()  # the initial load is not a query
        idle_lat, _ = _query(reader, rng, args.queries // 4)
        commits: list[tuple[int, float]] = []  # (last seq, commit time)
        start = args.batches // 3 * BATCH

        def write() -> None:
            for b in range(args.batches):
                seq = writer.write(
                    _changes(np.random.default_rng(b), start + b * BATCH)
                )
                commits.append((seq, time.time()))

        t0 = time.perf_counter()
        thread = threading.Thread(target=write)
        thread.start()
        busy_lat, answers = [], []
        while thread.is_alive():
            lat, ans = _query(reader, rng, 20)
            busy_lat += lat
            answers += ans
        thread.join()
        write_s = time.perf_counter() - t0
        seqs = [s for s, _ in commits]
        lags = []
        for a in answers:  # newest commit before the answer that the view lacked
            done = bisect_right([t for _, t in commits], a["t"])
            missing = [t for s, t in commits[:done] if s > a["seq"]]
            lags.append((a["t"] - min(missing)) * 1e3 if missing else 0.0)
        results = {
            "changes_per_s": args.batches * BATCH / write_s,
            "query_ms_idle": {
                "p50": percentile(idle_lat, 0.5) * 1e3,
                "p99": percentile(idle_lat, 0.99) * 1e3,
            },
            "query_ms_while_writing": {
                "p50": percentile(busy_lat, 0.5) * 1e3,
                "p99": percentile(busy_lat, 0.99) * 1e3,
            },
            "staleness_ms": {
                "p50": percentile([a["staleness_ms"] for a in answers], 0.5),
                "p99": percentile([a["staleness_ms"] for a in answers], 0.99),
            },
            "visibility_lag_ms_p99": percentile(lags, 0.99),
            "queries_while_writing": len(answers),
            "live_documents_at_end": len(reader),
            "last_seq": seqs[-1] if seqs else 0,
        }
        writer.close()
        reader.close()
    print(json.dumps(results, indent=2))
    report = {
        "benchmark": "live-collection",
        "config": {
            "batches": args.batches,
            "batch": BATCH,
            "dim": DIM,
            "k": K,
            "max_staleness_ms": args.max_staleness_ms,
            "smoke": args.smoke,
        },
        "machine_before": before,
        "machine_after": machine_info(),
        "results": results,
    }
    write_report(args.out, report, lambda png: _plot(results, png))


def _plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    groups = ["query_ms_idle", "query_ms_while_writing", "staleness_ms"]
    for j, q in enumerate(("p50", "p99")):
        ax.bar(
            [i + j * 0.4 for i in range(3)],
            [results[g][q] for g in groups],
            0.4,
            label=q,
            color=f"C{j}",
        )
    ax.set_xticks(
        [i + 0.2 for i in range(3)], ["query idle", "query writing", "staleness"]
    )
    ax.set_ylabel("ms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
