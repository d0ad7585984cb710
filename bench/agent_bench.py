"""Tool-selection benchmark: top-1/top-5 accuracy of tool retrieval on a catalog made
locally (540 tools, 1,080 paraphrased labelled queries; ``tool_catalog.py``).

Methods, measured in the same run on the same queries: embedding retrieval with the
packaged MiniLM (``sentence-transformers``), field-weighted BM25, their two-signal
fusion, and the ``views`` fusion of five signals (name and description, best usage
example, late interaction over MiniLM's token embeddings, soft BM25 over word
embeddings, BM25; ``ToolIndex``), plus the offline ``hash`` embedder and its fusions
as lexical peers, and MiniLM/fusion over tools indexed without their usage examples.

The queries are split per tool: the first paraphrase of each tool is the dev split,
the second the test split. Fusion weights are chosen on the dev split
(``ToolIndex.tune``, ``ToolIndex.tune_views``); every accuracy reported is on the test
split. The two fusions are also measured, with the same weights, on the test splits
of ``--draws`` further paraphrase draws (other seeds) to show how much one draw of
the queries moves the figure. Tools are indexed
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
GOAL_RUN = "MiniLM views fusion"
# label, embedder, method, indexed with examples
RUNS = [
    ("BM25", None, "bm25", True),
    ("MiniLM", "sentence-transformers", "embedding", True),
    ("MiniLM + BM25 fusion", "sentence-transformers", "fusion", True),
    (GOAL_RUN, "sentence-transformers", "views", True),
    ("MiniLM, no examples", "sentence-transformers", "embedding", False),
    ("fusion, no examples", "sentence-transformers", "fusion", False),
    ("views, no examples", "sentence-transformers", "views", False),
    ("hash", "hash", "embedding", True),
    ("hash + BM25 fusion", "hash", "fusion", True),
    ("hash views fusion", "hash", "views", True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/agent.json"))
    parser.add_argument(
        "--embedders", default="sentence-transformers,hash", help="backends to run"
    )
    parser.add_argument(
        "--draws",
        type=int,
        default=2,
        help="further paraphrase draws (seeds 1..N) the fusions are measured on",
    )
    add_smoke_flag(parser)
    args = parser.parse_args()
    names, descs = make_catalog()
    params, examples = make_parameters(), make_examples()
    queries = make_queries(per_tool=2, seed=0)
    if not examples_disjoint([q for q, _ in queries], examples):
        raise SystemExit("a query equals or contains an indexed example phrase")
    dev, test = queries[0::2], queries[1::2]
    draws = [make_queries(per_tool=2, seed=s)[1::2] for s in range(1, args.draws + 1)]
    if args.smoke:
        dev, test = dev[::5], test[::10]
        draws = [d[::10] for d in draws[:1]]
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
        tuning.update(_tune(label, index, method, dev))
        t0 = time.perf_counter()
        ranks = index.rank([q for q, _ in test], method)
        wall = time.perf_counter() - t0
        top1, top5 = _accuracy(ranks, test, names)
        results[label] = {
            "top1": top1,
            "top5": top5,
            "ms_per_query": wall / len(test) * 1e3,
            "by_example_overlap": split_by_example_overlap(
                test, ranks, names, examples
            ),
        }
        if method != "embedding" and emb is not None:
            results[label]["other_draws"] = [
                _accuracy_dict(index.rank([q for q, _ in d], method), d, names)
                for d in draws
            ]
        if label == GOAL_RUN:
            indexed = [" ".join(f.values()) for f in index.fields]
            analysis = error_analysis(test, ranks, names, examples, indexed)
        print(
            f"{label:24s} top-1 {top1:.3f}  top-5 {top5:.3f}  "
            f"{wall / len(test) * 1e3:.2f} ms/query  "
            + " ".join(
                f"draw top-5 {d['top5']:.3f}"
                for d in results[label].get("other_draws", [])
            )
        )
    report = {
        "benchmark": "agent-tool-selection",
        "config": {
            "tools": len(names),
            "dev_queries": len(dev),
            "test_queries": len(test),
            "split": "per tool: 1st paraphrase dev (tunes the fusion weights), "
            "2nd paraphrase test (all figures)",
            "other_draws": f"test splits of query seeds 1..{args.draws}, fusion "
            "weights from the seed-0 dev split; a draw may repeat a dev paraphrase "
            "(6 phrasings x 2-4 synonyms per word)",
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
        "goal": _goal(results.get(GOAL_RUN), analysis),
    }
    write_report(args.out, report, lambda png: _plot(results, png))


def _accuracy(
    ranks: list[list[int]], queries: list[tuple[str, str]], names: list[str]
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy of ``ranks`` against the queries' gold tools."""
    gold = [names.index(t) for _, t in queries]
    pairs = list(zip(ranks, gold, strict=True))
    return (
        sum(r[0] == g for r, g in pairs) / len(gold),
        sum(g in r[:5] for r, g in pairs) / len(gold),
    )


def _accuracy_dict(
    ranks: list[list[int]], queries: list[tuple[str, str]], names: list[str]
) -> dict[str, float]:
    top1, top5 = _accuracy(ranks, queries, names)
    return {"top1": top1, "top5": top5}


def _tune(
    label: str, index: ToolIndex, method: str, dev: list[tuple[str, str]]
) -> dict[str, Any]:
    """Tune a fusion's weights on the dev split (nothing for a single signal)."""
    queries, gold = [q for q, _ in dev], [t for _, t in dev]
    if method == "fusion":
        mrr = index.tune(queries, gold)
        return {label: {"chosen_weight": index.lexical_weight, "dev_mrr": mrr}}
    if method == "views":
        tried = index.tune_views(queries, gold)
        return {
            label: {
                "chosen_weights": index.view_weights,
                "dev_mrr": tried[0][1],
                "next_best": [{"weights": w, "dev_mrr": m} for w, m in tried[1:6]],
            }
        }
    return {}


def _goal(fusion: dict[str, Any] | None, analysis: dict[str, Any]) -> dict[str, Any]:
    """Whether the views fusion reaches top-5 >= 0.95 on the test split, how the
    other draws fare, and if the goal is missed why."""
    if not fusion or not analysis:
        return {"top5_goal": GOAL_TOP5, "reached": None}
    kinds = analysis["top1_misses_by_kind"]
    unseen = fusion["by_example_overlap"]["no_word_from_example"]
    draws = [d["top5"] for d in fusion.get("other_draws", [])]
    reached = fusion["top5"] >= GOAL_TOP5
    base = {
        "top5_goal": GOAL_TOP5,
        "method": GOAL_RUN,
        "test_top5": fusion["top5"],
        "other_draws_top5": draws,
        "draws_reaching_goal": f"{sum(d >= GOAL_TOP5 for d in draws)}/{len(draws)}",
    }
    if reached:
        return {**base, "reached": True}
    return {
        **base,
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
