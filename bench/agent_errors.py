"""Error analysis for the tool-selection benchmark (``agent_bench.py``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tool_catalog import ACTIONS, OBJECTS

from sage_plugins.agents.lexical import tool_terms


def _parts(tool: str) -> tuple[str, str]:
    for action in ACTIONS:
        if tool.startswith(action + "_"):
            return action, tool[len(action) + 1 :]
    raise ValueError(tool)


def _overlaps_example(query: str, tool: str, names: list[str], examples: list) -> bool:
    ex = " ".join(examples[names.index(tool)])
    return bool(set(tool_terms(query)) & set(tool_terms(ex)))


def split_by_example_overlap(
    test: list[tuple[str, str]],
    ranks: list[list[int]],
    names: list[str],
    examples: list,
) -> dict[str, Any]:
    """Top-1/top-5 for queries sharing a (stemmed) word with their tool's example, and
    for the rest (only synonyms no example of the tool uses)."""
    out: dict[str, Any] = {}
    for shared in (True, False):
        rows = [
            (names.index(t), r)
            for (q, t), r in zip(test, ranks, strict=True)
            if _overlaps_example(q, t, names, examples) == shared
        ]
        key = "shares_word_with_example" if shared else "no_word_from_example"
        out[key] = {
            "queries": len(rows),
            "top1": sum(r[0] == g for g, r in rows) / len(rows) if rows else None,
            "top5": sum(g in r[:5] for g, r in rows) / len(rows) if rows else None,
        }
    return out


def error_analysis(
    test: list[tuple[str, str]],
    ranks: list[list[int]],
    names: list[str],
    examples: list,
    indexed: list[str],
    show: int = 25,
) -> dict[str, Any]:
    """Why the fusion misses: which half of the tool (action or object) the top guess
    gets wrong, how many top-5 misses share no (stemmed) word with anything indexed for
    their tool (``indexed``: its text per tool), which synonyms miss most, and the
    misses themselves."""
    kinds: Counter[str] = Counter()
    no_shared = top5_misses = 0
    words: Counter[str] = Counter()
    misses = []
    for (q, tool), r in zip(test, ranks, strict=True):
        gold = names.index(tool)
        if r[0] == gold:
            continue
        action, obj = _parts(tool)
        got_a, got_o = _parts(names[r[0]])
        kind = (
            "wrong action, right object"
            if got_o == obj
            else "right action, wrong object"
            if got_a == action
            else "both wrong"
        )
        kinds[kind] += 1
        in_top5 = gold in r[:5]
        if not in_top5:
            top5_misses += 1
            no_shared += not set(tool_terms(q)) & set(tool_terms(indexed[gold]))
            ql = q.lower()
            for syn in ACTIONS[action][1] + OBJECTS[obj][1]:
                if syn.lower() in ql:
                    words[syn] += 1
            if len(misses) < show:
                misses.append(
                    {
                        "query": q,
                        "gold": tool,
                        "top5": [names[i] for i in r[:5]],
                        "shares_word_with_example": _overlaps_example(
                            q, tool, names, examples
                        ),
                    }
                )
    return {
        "top1_misses_by_kind": dict(kinds),
        "top5_misses": top5_misses,
        "top5_misses_sharing_no_word_with_their_tool": no_shared,
        "synonyms_in_top5_misses": dict(words.most_common(20)),
        "top5_misses_shown": misses,
    }
