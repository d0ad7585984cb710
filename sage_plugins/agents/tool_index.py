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

``method="views"`` fuses more signals the same way, each normalised per query and
weighted by ``view_weights``: the tool's name and description embedded alone
(``card``), its best-matching usage example (``examples``), late interaction over the
model's token embeddings (``tokens``), a soft BM25 over word embeddings (``words``),
and BM25 (:mod:`sage_plugins.agents.tool_signals` describes each). A signal the
embedder cannot give (``tokens`` needs ``"embed_tokens"``) is left out and the others'
weights rescaled. :meth:`ToolIndex.tune_views` picks the weights on labelled queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sage_core.backends import EmbeddingBackend
from sage_core.tools import Tool, ToolError
from sage_plugins.agents.lexical import field_bm25, split_identifier
from sage_plugins.agents.tool_signals import (
    ExampleMatcher,
    TokenMatcher,
    WordMatcher,
    card_text,
    clean_query,
    mean_reciprocal_rank,
    weight_grid,
)

METHODS = ("embedding", "bm25", "fusion", "views")
#: default lexical weight of the fusion: the best on the tool bench's dev split (MiniLM)
LEXICAL_WEIGHT = 0.2
WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))
SIGNALS = ("card", "examples", "tokens", "words", "bm25")
#: default weights of ``views``: the best on the tool bench's dev split (MiniLM)
VIEW_WEIGHTS: Mapping[str, float] = {
    "card": 0.4,
    "examples": 0.1,
    "tokens": 0.3,
    "words": 0.2,
    "bm25": 0.0,
}


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


def _by_max(rows: np.ndarray) -> np.ndarray:
    """BM25 rows over their maximum (rows without a hit stay 0; no rows: as is)."""
    if not len(rows):
        return rows
    top = rows.max(axis=1, keepdims=True)
    return rows / np.where(top > 0, top, 1.0)


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
        view_weights: weights of the ``views`` signals (``SIGNALS``; missing ones
            count 0).

    Raises:
        ToolError: lengths differ, ``lexical_weight`` outside [0, 1], or view
            weights that are negative, unknown or all zero.
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
        view_weights: Mapping[str, float] = VIEW_WEIGHTS,
    ) -> None:
        n = len(names)
        params = list(parameters) if parameters is not None else [None] * n
        exs = [list(e) for e in examples] if examples is not None else [[]] * n
        if not len(descriptions) == len(params) == len(exs) == n:
            raise ToolError(
                "tool names, descriptions, parameters, examples differ in length"
            )
        self.names = list(names)
        self._examples = exs
        self.fields = [
            tool_fields(*row)
            for row in zip(names, descriptions, params, exs, strict=True)
        ]
        self.lexical_weight = _check_weight(lexical_weight)
        self.view_weights = _check_views(view_weights)
        self._signals: dict[str, Any] | None = None
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
        if method == "views":
            raise ToolError("views has several signals: use signal_scores()")
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

    @property
    def signals(self) -> tuple[str, ...]:
        """The ``views`` signals this index can give (``tokens`` needs an embedder
        with token embeddings)."""
        if self.embedder is None:
            return ("bm25",)
        caps = self.embedder.capabilities
        return tuple(s for s in SIGNALS if s != "tokens" or "embed_tokens" in caps)

    def _matchers(self) -> dict[str, Any]:
        """The per-signal matchers, built on first use (each embeds the catalog)."""
        if self._signals is None:
            emb = self.embedder
            assert emb is not None
            texts = [f"{card_text(f)} {f['examples']}" for f in self.fields]
            self._signals = {
                "card": np.asarray(
                    emb.embed([card_text(f) for f in self.fields]), dtype=np.float32
                ),
                "examples": ExampleMatcher(emb, self._examples),
                "words": WordMatcher(emb, texts),
            }
            if "tokens" in self.signals:
                self._signals["tokens"] = TokenMatcher(emb, texts)
        return self._signals

    def signal_scores(
        self, queries: Sequence[str], signals: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Each signal's scores (queries x tools), normalised per query to [0, 1]
        (min-max; BM25 by its maximum); ``signals`` default: those weighted.

        Raises:
            ToolError: a signal this index cannot give.
        """
        wanted = list(signals) if signals is not None else self._weighted()
        missing = sorted(set(wanted) - set(self.signals))
        if missing:
            raise ToolError(
                f"signals {missing} need an embedder"
                + (" with token embeddings" if missing == ["tokens"] else "")
            )
        out: dict[str, np.ndarray] = {}
        if "bm25" in wanted:
            lex = np.asarray([self.bm25.scores(q) for q in queries], dtype=np.float64)
            out["bm25"] = _by_max(lex)
        semantic = [s for s in wanted if s != "bm25"]
        if not semantic:
            return out
        m = self._matchers()
        cleaned = [clean_query(q) for q in queries]
        if {"card", "examples"} & set(semantic):
            assert self.embedder is not None
            qv = np.asarray(self.embedder.embed(cleaned), dtype=np.float32)
        raw = {
            "card": lambda: (qv @ m["card"].T).astype(np.float64),
            "examples": lambda: m["examples"].scores(qv),
            "tokens": lambda: m["tokens"].scores(cleaned),
            "words": lambda: m["words"].scores(queries),
        }
        for name in semantic:
            out[name] = _minmax(raw[name]())
        return out

    def _weighted(self) -> list[str]:
        chosen = [s for s in self.signals if self.view_weights.get(s, 0.0) > 0]
        if not chosen:
            raise ToolError(
                f"no view weight is above 0 among the signals this index gives "
                f"{self.signals}: {dict(self.view_weights)}"
            )
        return chosen

    @staticmethod
    def fuse_views(
        scores: Mapping[str, np.ndarray], weights: Mapping[str, float]
    ) -> np.ndarray:
        """The weighted sum of normalised signal scores (weights rescaled to sum 1
        over the signals present)."""
        used = {s: w for s, w in weights.items() if s in scores and w > 0}
        total = sum(used.values())
        if total <= 0:
            raise ToolError("views: no signal with a weight above 0")
        return sum(scores[s] * (w / total) for s, w in used.items())  # type: ignore[return-value]

    @staticmethod
    def fuse(sem: np.ndarray, lex: np.ndarray, weight: float) -> np.ndarray:
        """The fused scores (module doc); rows without a BM25 hit keep the cosine order."""
        return (1.0 - weight) * _minmax(sem) + weight * _by_max(lex)

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
        if method == "views":
            fused = self.fuse_views(self.signal_scores(queries), self.view_weights)
            return [_order(row) for row in fused]
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
        at = self._gold_positions(queries, gold)
        sem, lex = self.scores(queries, "fusion")
        assert sem is not None and lex is not None
        mrr = {
            float(w): mean_reciprocal_rank(self.fuse(sem, lex, _check_weight(w)), at)
            for w in grid
        }
        self.lexical_weight = max(mrr, key=lambda w: (mrr[w], -w))
        return mrr

    def tune_views(
        self,
        queries: Sequence[str],
        gold: Sequence[str],
        step: float = 0.1,
        signals: Sequence[str] | None = None,
    ) -> list[tuple[dict[str, float], float]]:
        """Set ``view_weights`` to the weighting (multiples of ``step`` summing to 1
        over ``signals``, default every signal this index gives) with the best mean
        reciprocal rank of the gold tools on these labelled queries.

        Returns:
            every weighting tried with its mean reciprocal rank, best first.

        Raises:
            ToolError: as :meth:`tune`, or a signal this index cannot give.
        """
        at = self._gold_positions(queries, gold)
        names = list(signals) if signals is not None else list(self.signals)
        scores = self.signal_scores(queries, names)
        tried = [
            (w, mean_reciprocal_rank(self.fuse_views(scores, w), at))
            for w in weight_grid(names, step)
        ]
        tried.sort(key=lambda t: -t[1])
        self.view_weights = _check_views(tried[0][0])
        return tried

    def _gold_positions(self, queries: Sequence[str], gold: Sequence[str]) -> Any:
        if not queries or len(queries) != len(gold):
            raise ToolError(
                "tuning needs as many gold tool names as queries (at least one)"
            )
        unknown = sorted(set(gold) - set(self.names))
        if unknown:
            raise ToolError(f"gold tools not in the index: {unknown[:5]}")
        return np.asarray([self.names.index(g) for g in gold])

    def top(self, query: str, k: int, method: str = "fusion") -> list[str]:
        """Names of the ``k`` best tools for ``query``."""
        return [self.names[i] for i in self.rank([query], method)[0][:k]]


def _check_views(weights: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(SIGNALS))
    if unknown:
        raise ToolError(f"unknown view signals {unknown}; known: {list(SIGNALS)}")
    bad = {k: v for k, v in weights.items() if not float(v) >= 0.0}
    if bad or not any(float(v) > 0 for v in weights.values()):
        raise ToolError(f"view weights must be >= 0 and not all 0, got {dict(weights)}")
    return {s: float(weights.get(s, 0.0)) for s in SIGNALS}


def _check_weight(w: float) -> float:
    if not 0.0 <= float(w) <= 1.0:
        raise ToolError(f"lexical_weight must be in [0, 1], got {w}")
    return float(w)
