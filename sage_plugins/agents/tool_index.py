"""Tool retrieval for large catalogs: which k tools to offer the model for a query.

Each tool is indexed the way tool catalogs describe them: its name split into words,
its description, its parameters' names and descriptions, and the usage ``examples`` it
was registered with (``Tool.examples``). ``method="embedding"`` ranks by cosine
similarity of embeddings of that text, ``"bm25"`` by a field-weighted BM25 with
stemming (:mod:`sage_plugins.agents.lexical`), ``"fusion"`` by a weighted sum of both
scores normalised per query::

    fused = (1 - w) * (cos - min cos) / (max cos - min cos) + w * bm25 / max bm25

with ``w = lexical_weight``. BM25 often scores nothing for a paraphrased request, and
then the fusion is the embedding ranking; rank fusion with equal weights instead lets a
weak lexical ranking outvote the semantic one. :meth:`ToolIndex.tune` picks ``w`` on
labelled queries (keep them apart from the ones you measure on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sage_core.backends import EmbeddingBackend
from sage_core.tools import Tool, ToolError
from sage_plugins.agents.lexical import field_bm25, split_identifier

METHODS = ("embedding", "bm25", "fusion")
#: default lexical weight of the fusion: the best on the tool bench's dev split (MiniLM)
LEXICAL_WEIGHT = 0.2
WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))


def tool_fields(
    name: str,
    description: str,
    parameters: Mapping[str, Any] | None = None,
    examples: Iterable[str] = (),
) -> dict[str, str]:
    """What a tool is indexed by, per field (see the module doc)."""
    props = (parameters or {}).get("properties", {}) or {}
    params = [
        f"{split_identifier(k)}: {v.get('description', '')}".rstrip(": ")
        if isinstance(v, Mapping)
        else split_identifier(k)
        for k, v in props.items()
    ]
    return {
        "name": split_identifier(name),
        "description": description,
        "parameters": "; ".join(params),
        "examples": "; ".join(examples),
    }


def tool_text(fields: Mapping[str, str]) -> str:
    """The text a tool's embedding is computed from."""
    out = f"{fields['name']}: {fields['description']}"
    if fields.get("parameters"):
        out += f" Parameters: {fields['parameters']}."
    if fields.get("examples"):
        out += f" Examples: {fields['examples']}."
    return out


def _minmax(rows: np.ndarray) -> np.ndarray:
    lo = rows.min(axis=1, keepdims=True)
    span = rows.max(axis=1, keepdims=True) - lo
    # a span within float noise of zero: all equal, keep the raw order
    return (rows - lo) / np.where(span > 1e-12, span, 1.0)


def _order(scores: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-scores, kind="stable")]


class ToolIndex:
    """Ranks tools for a query (see module doc).

    Args:
        names: tool names.
        descriptions: their descriptions, same order.
        embedder: an embedding backend (needed for ``embedding``/``fusion``).
        parameters: their JSON schemas, same order (parameter names/descriptions
            are indexed).
        examples: usage phrases per tool, same order.
        lexical_weight: ``w`` of the fusion, in [0, 1].

    Raises:
        ToolError: lengths differ, or ``lexical_weight`` outside [0, 1].
    """

    def __init__(
        self,
        names: Sequence[str],
        descriptions: Sequence[str],
        embedder: EmbeddingBackend | None = None,
        *,
        parameters: Sequence[Mapping[str, Any] | None] | None = None,
        examples: Sequence[Iterable[str]] | None = None,
        lexical_weight: float = LEXICAL_WEIGHT,
    ) -> None:
        n = len(names)
        params = list(parameters) if parameters is not None else [None] * n
        exs = list(examples) if examples is not None else [()] * n
        if not len(descriptions) == len(params) == len(exs) == n:
            raise ToolError(
                "tool names, descriptions, parameters, examples differ in length"
            )
        self.names = list(names)
        self.fields = [
            tool_fields(*row)
            for row in zip(names, descriptions, params, exs, strict=True)
        ]
        self.lexical_weight = _check_weight(lexical_weight)
        self.bm25 = field_bm25(self.fields)
        self.embedder = embedder
        self.vectors = (
            np.asarray(
                embedder.embed([tool_text(f) for f in self.fields]), dtype=np.float32
            )
            if embedder
            else None
        )

    @classmethod
    def from_tools(
        cls, tools: Sequence[Tool], embedder: EmbeddingBackend | None = None, **kw: Any
    ) -> ToolIndex:
        """An index of registered tools (name, description, parameters, examples)."""
        return cls(
            [t.name for t in tools],
            [t.description for t in tools],
            embedder,
            parameters=[t.parameters for t in tools],
            examples=[t.examples for t in tools],
            **kw,
        )

    def scores(
        self, queries: Sequence[str], method: str = "fusion"
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(cosine, bm25)`` score matrices (queries x tools); None where unused.

        Raises:
            ToolError: unknown method, or embeddings asked for without an embedder.
        """
        if method not in METHODS:
            raise ToolError(f"tool retrieval method must be one of {METHODS}")
        if method != "bm25" and (self.embedder is None or self.vectors is None):
            raise ToolError(f"tool retrieval method {method!r} needs an embedder")
        lex = (
            np.asarray([self.bm25.scores(q) for q in queries], dtype=np.float64)
            if method != "embedding"
            else None
        )
        sem = None
        if method != "bm25":
            assert self.embedder is not None and self.vectors is not None
            q = np.asarray(self.embedder.embed(list(queries)), dtype=np.float32)
            sem = (q @ self.vectors.T).astype(np.float64)
        return sem, lex

    @staticmethod
    def fuse(sem: np.ndarray, lex: np.ndarray, weight: float) -> np.ndarray:
        """The fused scores (module doc); rows without a BM25 hit keep the cosine order."""
        top = lex.max(axis=1, keepdims=True)
        lexn = lex / np.where(top > 0, top, 1.0)
        return (1.0 - weight) * _minmax(sem) + weight * lexn

    def rank(
        self,
        queries: Sequence[str],
        method: str = "fusion",
        weight: float | None = None,
    ) -> list[list[int]]:
        """Tool positions per query, best first (``weight`` overrides ``lexical_weight``).

        Raises:
            ToolError: unknown method, no embedder for embeddings, a bad weight.
        """
        sem, lex = self.scores(queries, method)
        if method == "bm25":
            assert lex is not None
            return [_order(row) for row in lex]
        assert sem is not None
        if method == "embedding":
            return [_order(row) for row in sem]
        assert lex is not None
        w = self.lexical_weight if weight is None else _check_weight(weight)
        return [_order(row) for row in self.fuse(sem, lex, w)]

    def tune(
        self,
        queries: Sequence[str],
        gold: Sequence[str],
        grid: Sequence[float] = WEIGHT_GRID,
    ) -> dict[float, float]:
        """Set ``lexical_weight`` to the grid value with the best mean reciprocal rank
        of the gold tools on these labelled queries (ties: the smaller weight).

        Returns:
            the mean reciprocal rank per weight tried.

        Raises:
            ToolError: no queries, lengths differ, or a gold name not in the index.
        """
        if not queries or len(queries) != len(gold):
            raise ToolError(
                "tune needs as many gold tool names as queries (at least one)"
            )
        unknown = sorted(set(gold) - set(self.names))
        if unknown:
            raise ToolError(f"gold tools not in the index: {unknown[:5]}")
        at = np.asarray([self.names.index(g) for g in gold])
        sem, lex = self.scores(queries, "fusion")
        assert sem is not None and lex is not None
        mrr = {}
        for w in grid:
            fused = self.fuse(sem, lex, _check_weight(w))
            mine = fused[np.arange(len(at)), at][:, None]
            mrr[float(w)] = float(np.mean(1.0 / (1 + (fused > mine).sum(axis=1))))
        self.lexical_weight = max(mrr, key=lambda w: (mrr[w], -w))
        return mrr

    def top(self, query: str, k: int, method: str = "fusion") -> list[str]:
        """Names of the ``k`` best tools for ``query``."""
        return [self.names[i] for i in self.rank([query], method)[0][:k]]


def _check_weight(w: float) -> float:
    if not 0.0 <= float(w) <= 1.0:
        raise ToolError(f"lexical_weight must be in [0, 1], got {w}")
    return float(w)
