"""Tool-selection benchmark: top-1/top-5 accuracy of tool retrieval on a catalog made
locally (540 tools, 1,080 paraphrased labelled queries; ``tool_catalog.py``).

Methods, measured in the same run on the same queries: embedding retrieval with the
packaged MiniLM (``sentence-transformers``), BM25, and their reciprocal-rank fusion
(``ToolIndex``), plus the offline ``hash`` embedder and its fusion as a lexical peer.
Also the ranking time per query.

    python bench/agent_bench.py --out bench/results/agent.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # see memory_bench.py

from common import add_smoke_flag, machine_info, smoke_path
from tool_catalog import make_catalog, make_queries

from sage_core.backends import create_embedding_backend
from sage_plugins.agents import ToolIndex

RUNS = [
    ("bm25", None, "bm25"),
    ("MiniLM", "sentence-transformers", "embedding"),
    ("MiniLM + BM25 fusion", "sentence-transformers", "fusion"),
    ("hash", "hash", "embedding"),
    ("hash + BM25 fusion", "hash", "fusion"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/agent.json"))
    parser.add_argument(
        "--embedders", default="sentence-transformers,hash", help="backends to run"
    )
    add_smoke_flag(parser)
    args = parser.parse_args()
    names, descs = make_catalog()
    queries = make_queries(per_tool=2, seed=0)
    if args.smoke:
        queries = queries[::10]
        args.out = smoke_path(args.out)
    texts = [q for q, _ in queries]
    gold = [names.index(t) for _, t in queries]
    before = machine_info()
    indexes: dict[str | None, ToolIndex] = {None: ToolIndex(names, descs)}
    for emb in args.embedders.split(","):
        indexes[emb] = ToolIndex(names, descs, create_embedding_backend(emb))
    results: dict[str, Any] = {}
    for label, emb, method in RUNS:
        if emb not in indexes:
            continue
        t0 = time.perf_counter()
        ranks = indexes[emb].rank(texts, method)
        wall = time.perf_counter() - t0
        top1 = sum(r[0] == g for r, g in zip(ranks, gold, strict=True)) / len(gold)
        top5 = sum(g in r[:5] for r, g in zip(ranks, gold, strict=True)) / len(gold)
        results[label] = {
            "top1": top1,
            "top5": top5,
            "ms_per_query": wall / len(gold) * 1e3,
        }
        print(
            f"{label:24s} top-1 {top1:.3f}  top-5 {top5:.3f}  {wall / len(gold) * 1e3:.2f} ms/query"
        )
    report = {
        "benchmark": "agent-tool-selection",
        "config": {
            "tools": len(names),
            "queries": len(queries),
            "omp_num_threads": os.environ["OMP_NUM_THREADS"],
            "smoke": args.smoke,
        },
        "machine_before": before,
        "machine_after": machine_info(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    _plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = list(results)
    for j, key in enumerate(("top1", "top5")):
        ax.bar(
            [i + j * 0.4 for i in range(len(labels))],
            [results[x][key] for x in labels],
            0.4,
            label=key,
            color=f"C{j}",
        )
    ax.set_xticks(
        [i + 0.2 for i in range(len(labels))], labels, rotation=20, fontsize=7
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("tool-selection accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
