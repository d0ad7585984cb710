"""``rerank`` and ``refine``: order retrieved contexts, compress them to a budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sage_core.backends import EmbeddingBackend, create_embedding_backend
from sage_core.contract import Contract
from sage_core.functions import MapFunction, OperatorContext
from sage_plugins.rag.common import RagError, backend_contract, field_of, text_of
from sage_plugins.rag.text import BM25, split_sentences, token_counter

METHODS = ("bm25", "embedding")


class _Scoring(MapFunction):
    """Shared config of the two operators: a scoring method and, for
    ``method="embedding"``, an embedding backend."""

    name = ""

    @classmethod
    def contract_for(cls, config: Mapping[str, Any]) -> Contract:
        if config.get("method", "bm25") == "embedding":
            return backend_contract(
                cls.name, config, default_backend="sentence-transformers", batch_size=16
            )
        return Contract(batch_size=int(config.get("batch_size", 16)))

    def __init__(
        self,
        *,
        method: str = "bm25",
        backend: str = "sentence-transformers",
        backend_config: Mapping[str, Any] | None = None,
        field: str = "query",
        contexts: str = "contexts",
        batch_size: int = 16,
        **config: Any,
    ) -> None:
        super().__init__(
            method=method,
            backend=backend,
            backend_config=dict(backend_config or {}),
            field=field,
            contexts=contexts,
            batch_size=batch_size,
            **config,
        )
        if method not in METHODS:
            raise RagError(
                f"{self.name}: method must be one of {METHODS}, not {method!r}"
            )
        self.method, self.field, self.contexts = method, field, contexts
        self.embedder: EmbeddingBackend | None = None

    def open(self, context: OperatorContext) -> None:
        if self.method == "embedding":
            self.embedder = create_embedding_backend(
                self.config["backend"], **self.config["backend_config"]
            )

    def close(self) -> None:
        if self.embedder is not None:
            self.embedder.close()
            self.embedder = None

    def _scores(self, query: str, texts: list[str]) -> list[float]:
        """Similarity of each text to the query (higher: more relevant)."""
        if not texts:
            return []
        if self.method == "bm25":
            return BM25(texts).scores(query)
        if self.embedder is None:
            self.open(OperatorContext(self.name))
        assert self.embedder is not None
        vectors = self.embedder.embed([query, *texts])
        return [float(s) for s in vectors[1:] @ vectors[0]]

    def _parts(self, item: Any) -> tuple[str, list[dict[str, Any]]]:
        query = text_of(item, self.field, self.name)
        found = field_of(item, self.contexts, self.name)
        if not isinstance(found, list):
            raise RagError(f"{self.name}: {self.contexts!r} must be a list of contexts")
        return query, found


class Rerank(_Scoring):
    """Re-orders ``contexts`` by their relevance to the ``query``: ``method="bm25"``
    (lexical, no model) or ``"embedding"`` (cosine similarity with an embedding
    backend). Adds ``rerank_score`` to each context; ``top_n`` keeps the best n."""

    name = "rerank"
    contract = Contract(batch_size=16)

    def __init__(self, *, top_n: int | None = None, **config: Any) -> None:
        super().__init__(top_n=top_n, **config)
        if top_n is not None and top_n < 1:
            raise RagError(f"rerank: top_n must be >= 1, got {top_n}")
        self.top_n = top_n

    def map(self, item: Any) -> Any:
        query, found = self._parts(item)
        scores = self._scores(query, [text_of(c, "text", "rerank") for c in found])
        ranked = sorted(
            ({**c, "rerank_score": s} for c, s in zip(found, scores, strict=True)),
            key=lambda c: -c["rerank_score"],
        )
        return {**item, self.contexts: ranked[: self.top_n]}


class Refine(_Scoring):
    """Compresses ``contexts`` into ``context``: the sentences most relevant to the
    query (BM25 or embedding similarity) that fit ``budget_tokens``, kept in their
    original order and tagged ``[n]`` with their context's rank.

    Adds ``refine``: ``tokens_in``, ``tokens_out``, ``rate`` (out/in, the
    compression rate), ``sentences_in``, ``sentences_out``. Token counts use
    ``tokenizer`` (``"approx"`` or a ``tokenizer.json``/model directory).
    """

    name = "refine"
    contract = Contract(batch_size=16)

    def __init__(
        self,
        *,
        budget_tokens: int = 256,
        tokenizer: str | None = None,
        out: str = "context",
        **config: Any,
    ) -> None:
        super().__init__(
            budget_tokens=budget_tokens, tokenizer=tokenizer, out=out, **config
        )
        if budget_tokens < 1:
            raise RagError(f"refine: budget_tokens must be >= 1, got {budget_tokens}")
        self.budget, self.out = budget_tokens, out
        self.count = token_counter(tokenizer)

    def map(self, item: Any) -> Any:
        query, found = self._parts(item)
        sentences: list[tuple[int, int, str, int]] = []  # rank, position, text, tokens
        for rank, ctx in enumerate(found, start=1):
            for pos, sentence in enumerate(
                split_sentences(text_of(ctx, "text", "refine"))
            ):
                sentences.append((rank, pos, sentence, self.count(sentence)))
        scores = self._scores(query, [s[2] for s in sentences])
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        chosen: list[tuple[int, int, str, int]] = []
        used = 0
        for i in order:
            sentence = sentences[int(i)]
            if used + sentence[3] <= self.budget:
                chosen.append(sentence)
                used += sentence[3]
        chosen.sort()
        lines: dict[int, list[str]] = {}
        for rank, _, text, _ in chosen:
            lines.setdefault(rank, []).append(text)
        context = "\n".join(f"[{rank}] " + " ".join(t) for rank, t in lines.items())
        tokens_in = sum(s[3] for s in sentences)
        return {
            **item,
            self.out: context,
            "refine": {
                "tokens_in": tokens_in,
                "tokens_out": used,
                "rate": used / tokens_in if tokens_in else 1.0,
                "sentences_in": len(sentences),
                "sentences_out": len(chosen),
            },
        }
