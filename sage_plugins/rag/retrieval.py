"""``embed``, ``index-writer`` and ``retrieve``: vectors in, collections, top-k out."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from sage_core import plugins
from sage_core.backends import EmbeddingBackend, create_embedding_backend
from sage_core.contract import Contract
from sage_core.functions import (
    FINAL_EPOCH,
    MapFunction,
    OperatorContext,
    SinkFunction,
)
from sage_plugins.rag.collection import Collection, write_shard
from sage_plugins.rag.common import (
    RagError,
    backend_contract,
    field_of,
    text_of,
    with_fields,
)

logger = logging.getLogger(__name__)


def contract_threads(context: OperatorContext) -> int:
    """Threads an operator's index calls use: the CPUs of its effective contract
    (DSL/spec ``contract=`` overrides included; at least 1), so replicas sharing a
    worker do not oversubscribe its CPUs."""
    return max(1, int(context.contract.cpu))


class Embed(MapFunction):
    """Adds ``out`` (default ``"embedding"``): the vector of the item's ``field``.

    Config: ``backend`` (default ``"sentence-transformers"``), ``backend_config``
    (passed to the backend), ``field`` (``"text"``; use ``"query"`` for questions),
    ``out``, ``batch_size`` (items per backend call, 32) and ``max_wait_ms`` (10):
    both become the contract, so the runtime hands the operator batches of that size.
    A bare string item is treated as ``{field: item}``. Vectors are float32 numpy
    rows of unit norm.
    """

    contract = Contract(batch_size=32, max_wait_ms=10.0)

    @classmethod
    def contract_for(cls, config: Mapping[str, Any]) -> Contract:
        return backend_contract(
            "embed",
            config,
            default_backend="sentence-transformers",
            batch_size=32,
            max_wait_ms=10.0,
        )

    def __init__(
        self,
        *,
        backend: str = "sentence-transformers",
        backend_config: Mapping[str, Any] | None = None,
        field: str = "text",
        out: str = "embedding",
        batch_size: int = 32,
        max_wait_ms: float = 10.0,
    ) -> None:
        super().__init__(
            backend=backend,
            backend_config=dict(backend_config or {}),
            field=field,
            out=out,
            batch_size=batch_size,
            max_wait_ms=max_wait_ms,
        )
        self.backend_name = backend
        self.backend_config = dict(backend_config or {})
        self.field, self.out = field, out
        self.backend: EmbeddingBackend | None = None

    def open(self, context: OperatorContext) -> None:
        self.backend = create_embedding_backend(
            self.backend_name, **self.backend_config
        )

    def map_batch(self, items: list[Any]) -> list[Any]:
        if self.backend is None:
            self.open(OperatorContext("embed"))
        assert self.backend is not None
        texts = [text_of(item, self.field, "embed") for item in items]
        vectors = self.backend.embed(texts)
        return [
            with_fields(item, self.field, **{self.out: vectors[i]})
            for i, item in enumerate(items)
        ]

    def map(self, item: Any) -> Any:
        return self.map_batch([item])[0]

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


class IndexWriter(SinkFunction):
    """Writes embedded documents into the persisted collection ``collection``.

    Config: ``collection`` (name), ``index`` (vector-index backend: ``native-flat``,
    ``native-ivf``, ``hnswlib``, ``usearch`` or a plugin), ``metric`` (``cos``),
    ``index_options``, ``mode`` (``overwrite``: this job's documents replace the
    collection; ``append``), ``root`` (default: the data dir's ``collections``),
    ``embedding_model`` (recorded so readers can check), ``field`` (``embedding``).
    The index builds on as many threads as the contract's ``cpu`` (unless
    ``index_options`` sets ``threads``).
    Each replica keeps its items and writes its shard when it closes; ``result()``
    is the number of documents it wrote. A job that fails still publishes what each
    replica received — re-run the indexing job after a failure. With checkpoints on
    the items are part of each checkpoint and the shard is written only when the job
    succeeds (exactly-once across restarts).
    """

    contract = Contract(batch_size=256)

    def __init__(
        self,
        *,
        collection: str,
        index: str = "native-flat",
        metric: str = "cos",
        index_options: Mapping[str, Any] | None = None,
        mode: str = "overwrite",
        root: str | None = None,
        embedding_model: str | None = None,
        field: str = "embedding",
    ) -> None:
        super().__init__(
            collection=collection,
            index=index,
            metric=metric,
            index_options=dict(index_options or {}),
            mode=mode,
            root=root,
            embedding_model=embedding_model,
            field=field,
        )
        if mode not in ("overwrite", "append"):
            raise RagError(f"index-writer: mode must be overwrite/append, not {mode!r}")
        self.collection, self.field = collection, field
        self.docs: list[dict[str, Any]] = []
        self.vectors: list[Any] = []
        self.written = 0
        self._context = OperatorContext(
            "index-writer", contract=type(self).contract_for(self.config)
        )

    def open(self, context: OperatorContext) -> None:
        self._context = context

    def sink(self, item: Any) -> None:
        vector = np.asarray(field_of(item, self.field, "index-writer"), np.float32)
        text = text_of(item, "text", "index-writer")
        if vector.ndim != 1 or (self.vectors and len(vector) != len(self.vectors[0])):
            raise RagError(
                f"index-writer: item {item.get('id')!r} has a vector of shape "
                f"{vector.shape}; all vectors of a collection have one length"
            )
        self.docs.append(
            {"id": str(item.get("id", "")), "text": text, "meta": item.get("meta", {})}
        )
        self.vectors.append(vector)

    def snapshot_state(self, epoch: int) -> dict[str, Any]:
        return {"docs": self.docs, "vectors": self.vectors}

    def restore_state(self, state: Any) -> None:
        self.docs, self.vectors = list(state["docs"]), list(state["vectors"])

    def commit(self, epoch: int) -> None:
        if epoch >= FINAL_EPOCH:
            self._write()

    def close(self) -> None:
        if not self._context.checkpointing:  # else commit(FINAL_EPOCH) wrote it
            self._write()

    def _write(self) -> None:
        if not self.docs:
            logger.info(
                "index-writer replica %d got no documents", self._context.replica_index
            )
            return
        ctx = self._context
        cfg = self.config
        options = dict(cfg["index_options"])
        backend = plugins.get("vector-index", cfg["index"])
        if "threads" in inspect.signature(backend).parameters:
            options.setdefault("threads", contract_threads(ctx))
        write_shard(
            self.collection,
            docs=self.docs,
            vectors=np.stack(self.vectors),
            generation=f"{ctx.job_id or 'job'}-{ctx.operator}",
            replica=ctx.replica_index,
            index=cfg["index"],
            metric=cfg["metric"],
            index_options=options,
            embedding_model=cfg["embedding_model"],
            mode=cfg["mode"],
            root=cfg["root"],
        )
        self.written = len(self.docs)
        self.docs, self.vectors = [], []

    def result(self) -> int:
        return self.written


class Retrieve(MapFunction):
    """Adds ``contexts``: the ``top_k`` documents of ``collection`` nearest to the
    item's ``embedding``, best first (``{id, text, meta, score}``).

    Config: ``collection``, ``top_k`` (5), ``where`` (meta filter: ``{"source":
    "a.md"}`` or ``{"source": ["a.md", "b.md"]}``; an item's own ``where`` field
    overrides it), ``root``, ``field`` (``embedding``), ``out`` (``contexts``),
    ``keep_embedding`` (False drops the query vector from the output), ``trusted``
    (open index files whose backend's loader trusts them, such as usearch: only
    for collections you wrote or trust). Searches run on as many threads as the
    contract's ``cpu``.
    """

    contract = Contract(batch_size=32)

    def __init__(
        self,
        *,
        collection: str,
        top_k: int = 5,
        where: Mapping[str, Any] | None = None,
        root: str | None = None,
        field: str = "embedding",
        out: str = "contexts",
        keep_embedding: bool = False,
        trusted: bool = False,
    ) -> None:
        super().__init__(
            collection=collection,
            top_k=top_k,
            where=dict(where or {}),
            root=root,
            field=field,
            out=out,
            keep_embedding=keep_embedding,
            trusted=trusted,
        )
        if top_k < 1:
            raise RagError(f"retrieve: top_k must be >= 1, got {top_k}")
        self.top_k, self.where = top_k, dict(where or {})
        self.field, self.out, self.keep = field, out, keep_embedding
        self.store: Collection | None = None

    def open(self, context: OperatorContext) -> None:
        self.store = Collection(
            self.config["collection"],
            self.config["root"],
            trusted=self.config["trusted"],
        )
        threads = contract_threads(context)
        for shard in self.store.shards:
            if hasattr(shard.index, "threads"):
                shard.index.threads = threads

    def map_batch(self, items: list[Any]) -> list[Any]:
        if self.store is None:
            self.open(
                OperatorContext(
                    "retrieve", contract=type(self).contract_for(self.config)
                )
            )
        assert self.store is not None
        vectors = np.stack(
            [np.asarray(field_of(i, self.field, "retrieve"), np.float32) for i in items]
        )
        out: list[Any] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for n, item in enumerate(items):
            where = item.get("where", self.where) or {}
            groups.setdefault(repr(sorted(where.items())), []).append(n)
        for rows in groups.values():
            where = items[rows[0]].get("where", self.where) or None
            hits = self.store.search(vectors[rows], self.top_k, where)
            for n, found in zip(rows, hits, strict=True):
                item = dict(items[n])
                if not self.keep:
                    item.pop(self.field, None)
                item[self.out] = found
                out[n] = item
        return out

    def map(self, item: Any) -> Any:
        return self.map_batch([item])[0]
