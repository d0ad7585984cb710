"""The signals ``ToolIndex``'s ``views`` method fuses, besides BM25.

A sentence embedding of a whole tool ("name: description. Parameters ... Examples
...") blurs what tells neighbouring tools apart: in a catalog of verbs x objects,
``create_invoice`` and ``restore_invoice`` differ by one word among twenty. Each signal
here looks at a tool from another side:

* ``card``: cosine of the request with the tool's name and description alone;
* ``examples``: the best cosine of the request with any one of the tool's usage
  examples (each embedded on its own);
* ``tokens``: late interaction (as ColBERT scores): every token of the request finds
  its most similar token of the tool's text among the model's contextual token
  embeddings, and the similarities add up, so the verb and the object of a request
  are both matched, each with the word of the tool that means it. Needs a backend
  with the ``"embed_tokens"`` capability;
* ``words``: a soft BM25: every word of the request finds the tool word it is most
  similar to (cosine of the words' embeddings, ignored below ``WORD_FLOOR``), weighted
  by that tool word's inverse document frequency, so "recap" meets "summarize" and a
  rare word weighs more than one every tool has.

Requests are embedded without their filler ("could you ... for me, thanks"): the stop
and request words of :mod:`sage_plugins.agents.lexical` are dropped first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from sage_core.backends import EmbeddingBackend
from sage_core.tools import ToolError
from sage_plugins.agents.lexical import DROPPED_WORDS, plain_words

#: a word pair less similar than this counts nothing in ``words``
WORD_FLOOR = 0.3


def clean_query(text: str) -> str:
    """The request without its stop and request words (the text itself if nothing
    is left)."""
    return " ".join(plain_words(text)) or text


def card_text(fields: Mapping[str, str]) -> str:
    """A tool's name and description, as ``card`` embeds them."""
    return f"{fields['name']}: {fields['description']}"


def _f32(vectors: object) -> np.ndarray:
    """``vectors`` as a float32 array (backends return unit rows already)."""
    return np.asarray(vectors, dtype=np.float32)


class ExampleMatcher:
    """``examples``: the best cosine over each tool's examples (tools without
    examples get the lowest score of the row)."""

    def __init__(
        self, embedder: EmbeddingBackend, examples: Sequence[Sequence[str]]
    ) -> None:
        texts = [e for exs in examples for e in exs if e.strip()]
        owners = [j for j, exs in enumerate(examples) for e in exs if e.strip()]
        self.tools = len(examples)
        self.owners = np.asarray(owners, dtype=np.int64)
        self.vectors = _f32(embedder.embed(texts)) if texts else None

    def scores(self, query_vectors: np.ndarray) -> np.ndarray:
        out = np.full((self.tools, len(query_vectors)), -np.inf)
        if self.vectors is not None:
            sims = (self.vectors @ query_vectors.T).astype(np.float64)
            np.maximum.at(out, self.owners, sims)  # each tool: its best example
        out = out.T
        low = np.where(np.isfinite(out), out, np.inf).min(axis=1, keepdims=True)
        return np.where(np.isfinite(out), out, np.where(np.isfinite(low), low, 0.0))


class TokenMatcher:
    """``tokens``: late interaction over contextual token embeddings."""

    def __init__(self, embedder: EmbeddingBackend, texts: Sequence[str]) -> None:
        self.embedder = embedder
        rows, starts = [], []
        for tv in embedder.embed_tokens(list(texts)):
            keep = _content_rows(tv.tokens)
            starts.append(sum(len(r) for r in rows))
            # a text of stop words only keeps them all; an empty one a zero row
            chosen = tv.vectors[keep] if keep else tv.vectors
            rows.append(chosen if len(chosen) else np.zeros((1, embedder.dim)))
        self.matrix = np.concatenate(rows).astype(np.float32)
        self.starts = np.asarray(starts, dtype=np.int64)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(queries), len(self.starts)))
        for i, tv in enumerate(self.embedder.embed_tokens(list(queries))):
            keep = _content_rows(tv.tokens)
            q = tv.vectors[keep] if keep else tv.vectors
            if len(q):
                sims = q @ self.matrix.T
                out[i] = np.maximum.reduceat(sims, self.starts, axis=1).sum(axis=0)
        return out


def _content_rows(tokens: Sequence[str]) -> list[int]:
    """Rows of tokens that carry content: word pieces of letters or digits, not stop
    or request words."""
    return [
        i
        for i, tok in enumerate(tokens)
        if tok.lstrip("#").isalnum() and tok.lower() not in DROPPED_WORDS
    ]


class WordMatcher:
    """``words``: the soft BM25 of the module doc."""

    def __init__(self, embedder: EmbeddingBackend, texts: Sequence[str]) -> None:
        self.embedder = embedder
        per_tool = [sorted(set(plain_words(t))) for t in texts]
        self.vocab = sorted({w for ws in per_tool for w in ws})
        at = {w: i for i, w in enumerate(self.vocab)}
        n = len(per_tool)
        df = np.zeros(len(self.vocab) + 1)
        for ws in per_tool:
            df[[at[w] for w in ws]] += 1
        # BM25's idf; the last slot pads tools with fewer words (it scores 0)
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))
        self.idf[-1] = 0.0
        width = max((len(ws) for ws in per_tool), default=0) or 1
        self.words = np.full((n, width), len(self.vocab), dtype=np.int64)
        for j, ws in enumerate(per_tool):
            self.words[j, : len(ws)] = [at[w] for w in ws]
        self.vectors = (
            _f32(embedder.embed(self.vocab))
            if self.vocab
            else np.zeros((0, embedder.dim), dtype=np.float32)
        )

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(queries), len(self.words)))
        asked = [plain_words(q) for q in queries]
        flat = sorted({w for ws in asked for w in ws})
        if not flat or not self.vocab:
            return out
        at = {w: i for i, w in enumerate(flat)}
        sims = _f32(self.embedder.embed(flat)) @ self.vectors.T
        gains = np.where(sims >= WORD_FLOOR, sims, 0.0) * self.idf[None, :-1]
        gains = np.concatenate([gains, np.zeros((len(flat), 1))], axis=1)
        for i, ws in enumerate(asked):
            for w in ws:
                out[i] += gains[at[w]][self.words].max(axis=1)
        return out


def simplex_grid(names: Sequence[str], step: float) -> list[dict[str, float]]:
    """Every weighting of ``names`` in multiples of ``step`` that sums to 1."""
    units = round(1 / step)
    if not math.isclose(units * step, 1.0):
        raise ValueError(f"step must divide 1, got {step}")
    out: list[dict[str, float]] = []

    def fill(i: int, left: int, acc: list[int]) -> None:
        if i == len(names) - 1:
            out.append(
                {
                    n: round(u * step, 10)
                    for n, u in zip(names, [*acc, left], strict=True)
                }
            )
            return
        for u in range(left + 1):
            fill(i + 1, left - u, [*acc, u])

    if names:
        fill(0, units, [])
    return out


def mean_reciprocal_rank(fused: np.ndarray, at: np.ndarray) -> float:
    """Mean reciprocal rank of the tools at ``at``; a tie counts against the gold
    tool (a signal that scores every tool alike ranks it last, not first)."""
    mine = fused[np.arange(len(at)), at][:, None]
    return float(np.mean(1.0 / (fused >= mine).sum(axis=1)))


def weight_grid(names: Sequence[str], step: float) -> list[dict[str, float]]:
    """:func:`simplex_grid`, with a bad step as a ``ToolError``."""
    try:
        return simplex_grid(names, step)
    except ValueError as exc:
        raise ToolError(str(exc)) from exc
