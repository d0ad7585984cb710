"""Tool retrieval for large catalogs: which k tools to offer the model for a query.

Each tool is indexed by ``"name: description"`` (name words split on ``-``/``_``).
``method="embedding"`` ranks by cosine similarity of embeddings, ``"bm25"`` by BM25,
``"fusion"`` by reciprocal-rank fusion of both (``1 / (60 + rank)`` summed; BM25
credits only tools that share a term with the query).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from sage_core.backends import EmbeddingBackend
from sage_core.tools import ToolError
from sage_plugins.rag.text import BM25

METHODS = ("embedding", "bm25", "fusion")
_RRF_K = 60


def tool_text(name: str, description: str) -> str:
    """What a tool is indexed by."""
    return f"{re.sub(r'[-_]+', ' ', name)}: {description}"


class ToolIndex:
    """Ranks tools for a query (see module doc).

    Args:
        names: tool names.
        descriptions: their descriptions, same order.
        embedder: an embedding backend (needed for ``embedding``/``fusion``).
    """

    def __init__(
        self,
        names: Sequence[str],
        descriptions: Sequence[str],
        embedder: EmbeddingBackend | None = None,
    ) -> None:
        self.names = list(names)
        texts = [tool_text(n, d) for n, d in zip(names, descriptions, strict=True)]
        self.bm25 = BM25(texts)
        self.embedder = embedder
        self.vectors = (
            np.asarray(embedder.embed(texts), dtype=np.float32) if embedder else None
        )

    def _order(self, scores: Any) -> list[int]:
        return [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")]

    def rank(self, queries: Sequence[str], method: str = "fusion") -> list[list[int]]:
        """Tool positions per query, best first.

        Raises:
            ToolError: unknown method, or embeddings asked for without an embedder.
        """
        if method not in METHODS:
            raise ToolError(f"tool retrieval method must be one of {METHODS}")
        if method != "bm25" and (self.embedder is None or self.vectors is None):
            raise ToolError(f"tool retrieval method {method!r} needs an embedder")
        bm25 = (
            [np.asarray(self.bm25.scores(q)) for q in queries]
            if method != "embedding"
            else []
        )
        lexical = [self._order(row) for row in bm25]
        if method == "bm25":
            return lexical
        assert self.embedder is not None and self.vectors is not None
        q = np.asarray(self.embedder.embed(list(queries)), dtype=np.float32)
        semantic = [self._order(row) for row in q @ self.vectors.T]
        if method == "embedding":
            return semantic
        fused = []
        credit = 1.0 / (_RRF_K + np.arange(1, len(self.names) + 1))
        for a, b, scores in zip(semantic, lexical, bm25, strict=True):
            score = np.zeros(len(self.names))
            score[a] += credit
            # BM25 ranks only the tools sharing a term with the query: the order of
            # the zero-score rest is arbitrary and earns nothing
            hit = scores[b] > 0
            score[np.asarray(b)[hit]] += credit[hit]
            fused.append(self._order(score))
        return fused

    def top(self, query: str, k: int, method: str = "fusion") -> list[str]:
        """Names of the ``k`` best tools for ``query``."""
        return [self.names[i] for i in self.rank([query], method)[0][:k]]
