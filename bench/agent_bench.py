"""Tool-selection benchmark: top-1/top-5 accuracy of tool retrieval on a catalog made
locally (540 tools, 1,080 paraphrased labelled queries; ``tool_catalog.py``).

Methods, measured in the same run on the same queries: embedding retrieval with the
packaged MiniLM (``sentence-transformers``), field-weighted BM25, and their fusion
(``ToolIndex``), plus the offline ``hash`` embedder and its fusion as a lexical peer,
and MiniLM/fusion over tools indexed without their usage examples.

The queries are split per tool: the first paraphrase of each tool is the dev split,
the second the test split. The fusion's lexical weight is chosen on the dev split
(``ToolIndex.tune``); every accuracy reported is on the test split. Tools are indexed
with their usage examples; no query equals or contains an example phrase (checked
before measuring), though a query may share synonyms with its tool's example: the
JSON splits test accuracy by that, and lists what the fusion misses.

    python bench/agent_bench.py --out bench/results/agent.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # see memory_bench.py

from agent_errors import error_analysis, split_by_example_overlap
from common import add_smoke_flag, machine_info, pyplot, smoke_path, write_report
from tool_catalog import (
    examples_disjoint,
    make_catalog,
    make_examples,
    make_parameters,
    make_queries,
)

from sage_core.backends import create_embedding_backend
from sage_plugins.agents import ToolIndex

GOAL_TOP5 = 0.95
# label, embedder, method, indexed with examples
RUNS = [
    ("BM25", None, "bm25", True),
    ("MiniLM", "sentence-transformers", "embedding", True),
    ("MiniLM + BM25 fusion", "sentence-transformers", "fusion", True),
    ("MiniLM, no examples", "sentence-transformers", "embedding", False),
    ("fusion, no examples", "sentence-transformers", "fusion", False),
    ("hash", "hash", "embedding", True),
    ("hash + BM25 fusion", "hash", "fusion", True),
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
    params, examples = make_parameters(), make_examples()
    queries = make_queries(per_tool=2, seed=0)
    if not examples_disjoint([q for q, _ in queries], examples):
        raise SystemExit("a query equals or contains an indexed example phrase")
    dev, test = queries[0::2], queries[1::2]
    if args.smoke:
        dev, test = dev[::5], test[::10]
        args.out = smoke_path(args.out)
    before = machine_info()
    indexes: dict[tuple[str | None, bool], ToolIndex] = {}
    results: dict[str, Any] = {}
    tuning: dict[str, Any] = {}
    analysis: dict[str, Any] = {}
    backends = {e: create_embedding_backend(e) for e in args.embedders.split(",")}
    for label, emb, method, with_examples in RUNS:
        if emb is not None and emb not in backends:
            continue
        key = (emb, with_examples)
        if key not in indexes:
            indexes[key] = ToolIndex(
                names,
                descs,
                backends[emb] if emb else None,
                parameters=params,
                examples=examples if with_examples else None,
            )
        index = indexes[key]
        if method == "fusion":
            mrr = index.tune([q for q, _ in dev], [t for _, t in dev])
            tuning[label] = {"chosen_weight": index.lexical_weight, "dev_mrr": mrr}
        t0 = time.perf_counter()
        ranks = index.rank([q for q, _ in test], method)
        wall = time.perf_counter() - t0
        gold = [names.index(t) for _, t in test]
        top1 = sum(r[0] == g for r, g in zip(ranks, gold, strict=True)) / len(gold)
        top5 = sum(g in r[:5] for r, g in zip(ranks, gold, strict=True)) / len(gold)
        results[label] = {
            "top1": top1,
            "top5": top5,
            "ms_per_query": wall / len(gold) * 1e3,
            "by_example_overlap": split_by_example_overlap(
                test, ranks, names, examples
            ),
        }
        if method == "fusion" and with_examples and emb == "sentence-transformers":
            indexed = [" ".join(f.values()) for f in index.fields]
            analysis = error_analysis(test, ranks, names, examples, indexed)
        extra = f"  (w={index.lexical_weight})" if method == "fusion" else ""
        print(
            f"{label:24s} top-1 {top1:.3f}  top-5 {top5:.3f}  "
            f"{wall / len(gold) * 1e3:.2f} ms/query{extra}"
        )
    report = {
        "benchmark": "agent-tool-selection",
        "config": {
            "tools": len(names),
            "dev_queries": len(dev),
            "test_queries": len(test),
            "split": "per tool: 1st paraphrase dev (tunes the fusion weight), "
            "2nd paraphrase test (all figures)",
            "examples": "one usage phrase per tool, indexed; no query equals or "
            "contains one (checked)",
            "omp_num_threads": os.environ["OMP_NUM_THREADS"],
            "smoke": args.smoke,
            "note": "2-core box shared with other work; accuracies do not depend on it",
        },
        "machine_before": before,
        "machine_after": machine_info(),
        "results": results,
        "fusion_tuning_on_dev": tuning,
        "error_analysis_fusion_test": analysis,
        "goal": _goal(results.get("MiniLM + BM25 fusion"), analysis),
    }
    write_report(args.out, report, lambda png: _plot(results, png))


def _goal(fusion: dict[str, Any] | None, analysis: dict[str, Any]) -> dict[str, Any]:
    """Whether the fusion reaches top-5 >= 0.95 on the test split, and if not why."""
    if not fusion or not analysis:
        return {"top5_goal": GOAL_TOP5, "reached": None}
    kinds = analysis["top1_misses_by_kind"]
    unseen = fusion["by_example_overlap"]["no_word_from_example"]
    reached = fusion["top5"] >= GOAL_TOP5
    if reached:
        return {"top5_goal": GOAL_TOP5, "reached": True}
    return {
        "top5_goal": GOAL_TOP5,
        "reached": False,
        "why_not": (
            f"{kinds.get('wrong action, right object', 0)} of "
            f"{sum(kinds.values())} top-1 misses get the object right and the action "
            f"wrong: the queries name the action only by a synonym or idiom (see "
            f"synonyms_in_top5_misses) that neither BM25 (no shared word) nor MiniLM "
            f"(18 actions x 30 objects differ by one verb) separates; "
            f"{analysis['top5_misses_sharing_no_word_with_their_tool']} of "
            f"{analysis['top5_misses']} top-5 misses share no word with anything "
            f"indexed for their tool; on queries sharing no word with their tool's "
            f"example the fusion's top-5 is {unseen['top5']:.3f}"
        ),
    }


def _plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = list(results)
    for j, key in enumerate(("top1", "top5")):
        ax.bar(
            [i + j * 0.4 for i in range(len(labels))],
            [results[x][key] for x in labels],
            0.4,
            label=key,
            color=f"C{j}",
        )
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.set_xticks(
        [i + 0.2 for i in range(len(labels))], labels, rotation=20, fontsize=7
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("tool-selection accuracy (test split)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
