"""Live collections: one pipeline keeps writing (adds, updates, deletes by id) while
others retrieve, with bounded and reported staleness.

The collection is an append-only change log in SQLite (WAL) under
``<data dir>/live/<name>/log.sqlite``: every change is a row with a growing ``seq``;
an update is a new row for the same ``doc_id``, a delete a row without a vector. A
writer commits each batch in one transaction, so a batch becomes visible at once and
a reader never sees half of it. Each reader keeps a vector index of the live rows
and applies the log from its last ``seq`` (one read transaction: a consistent
prefix) whenever its view is older than ``max_staleness_ms``. A search answers from a
view taken at most ``max_staleness_ms`` before it started, or during it (when it had
to refresh first), so it misses no change committed before that; it reports
``staleness_ms``, the age of that view when it answers (a refresh's own time included).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sage_core.common.settings import data_dir
from sage_core.contract import Contract
from sage_core.functions import MapFunction, OperatorContext, SinkFunction
from sage_core.vector_index import MISSING_ID, create_index
from sage_plugins.rag.collection import CollectionError, collection_path
from sage_plugins.rag.common import connect_wal, field_of

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    text TEXT,
    meta TEXT,
    vector BLOB,
    ts REAL NOT NULL
);
"""


def live_path(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """``<root or data dir>/live/<name>`` (names as for collections)."""
    base = Path(root) if root is not None else data_dir()
    return collection_path(name, base / "live")


def _connect(path: Path) -> sqlite3.Connection:
    path.mkdir(parents=True, exist_ok=True)
    return connect_wal(path / "log.sqlite", _SCHEMA)


class LiveWriter:
    """Appends changes to a live collection; each ``write`` is one transaction."""

    def __init__(
        self, name: str, *, root: str | os.PathLike[str] | None = None
    ) -> None:
        self.db = _connect(live_path(name, root))

    def write(self, changes: Sequence[Mapping[str, Any]]) -> int:
        """Apply ``changes``: ``{"id", "text", "embedding", "meta"?}`` adds or
        replaces a document, ``{"id", "delete": True}`` removes it. Returns the
        last ``seq`` written.

        Raises:
            CollectionError: a change without ``id``, or an add without embedding.
        """
        now = time.time()
        rows = []
        for c in changes:
            if "id" not in c:
                raise CollectionError("a live change needs an 'id'")
            if c.get("delete"):
                rows.append((str(c["id"]), None, None, None, now))
                continue
            if c.get("embedding") is None:
                raise CollectionError(f"change {c['id']!r} has no 'embedding'")
            vec = np.ascontiguousarray(c["embedding"], dtype=np.float32).ravel()
            meta = json.dumps(dict(c.get("meta") or {}))
            rows.append(
                (str(c["id"]), str(c.get("text", "")), meta, vec.tobytes(), now)
            )
        with self.db:
            self.db.executemany(
                "INSERT INTO log (doc_id, text, meta, vector, ts) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            last = self.db.execute("SELECT MAX(seq) FROM log").fetchone()[0]
        return int(last or 0)

    def close(self) -> None:
        self.db.close()


class LiveReader:
    """Searches a live collection; its view is at most ``max_staleness_ms`` old."""

    def __init__(
        self,
        name: str,
        *,
        root: str | os.PathLike[str] | None = None,
        max_staleness_ms: float = 100.0,
        index: str = "native-flat",
    ) -> None:
        self.db = _connect(live_path(name, root))
        self.max_staleness_s = max_staleness_ms / 1000.0
        self.index_name = index
        self.index: Any = None
        self.last_seq = 0
        self.view_time = 0.0  # when the view was last brought up to the log
        self.live: dict[str, int] = {}  # doc_id -> seq of its current row
        self.docs: dict[int, dict[str, Any]] = {}  # seq -> document

    def refresh(self) -> None:
        """Apply every change committed since the last refresh."""
        started = time.time()
        rows = self.db.execute(
            "SELECT seq, doc_id, text, meta, vector FROM log WHERE seq > ? ORDER BY seq",
            (self.last_seq,),
        ).fetchall()
        final: dict[str, tuple[int, str, str, bytes | None]] = {}
        for seq, doc_id, text, meta, blob in rows:  # the last change of each id wins
            final[doc_id] = (seq, text, meta, blob)
        old = [self.live.pop(d) for d in final if d in self.live]
        if old:  # one call each: removing from an index may compact it
            self.index.remove(np.array(old, dtype=np.uint64))
            for seq in old:
                del self.docs[seq]
        added = [(d, r) for d, r in final.items() if r[3] is not None]
        if added:
            vecs = np.frombuffer(b"".join(r[3] for _, r in added), dtype=np.float32)
            vecs = vecs.reshape(len(added), -1)
            if self.index is None:
                self.index = create_index(
                    self.index_name, dim=vecs.shape[1], metric="cos"
                )
            self.index.add(np.array([r[0] for _, r in added], dtype=np.uint64), vecs)
            for doc_id, (seq, text, meta, _) in added:
                self.live[doc_id] = seq
                self.docs[seq] = {"id": doc_id, "text": text, "meta": json.loads(meta)}
        if rows:
            self.last_seq = rows[-1][0]
        self.view_time = started

    def __len__(self) -> int:
        return len(self.live)

    def search(self, vector: Any, k: int) -> dict[str, Any]:
        """``{"hits": [{id, text, meta, score}], "staleness_ms", "seq"}``."""
        if time.time() - self.view_time > self.max_staleness_s:
            self.refresh()
        staleness = (time.time() - self.view_time) * 1e3
        hits: list[dict[str, Any]] = []
        if self.live and k > 0:
            q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
            ids, scores = self.index.search(q, min(k, len(self.live)))
            hits = [
                {**self.docs[int(i)], "score": float(s)}
                for i, s in zip(ids[0], scores[0], strict=True)
                if i != MISSING_ID
            ]
        return {"hits": hits, "staleness_ms": staleness, "seq": self.last_seq}

    def close(self) -> None:
        self.db.close()


class LiveIndexWriter(SinkFunction):
    """Streams adds, updates and deletes into a live collection (one transaction
    per batch).

    Config: ``collection``, ``root``, ``id_field`` ("id"), ``field`` ("text"),
    ``embedding_field`` ("embedding"); an item with ``"delete": true`` removes its id.
    """

    contract = Contract(batch_size=64, max_wait_ms=20.0)

    def __init__(
        self,
        *,
        collection: str,
        root: str | None = None,
        id_field: str = "id",
        field: str = "text",
        embedding_field: str = "embedding",
    ) -> None:
        super().__init__(collection=collection)
        self.name, self.root = collection, root
        self.id_field, self.field, self.embedding_field = (
            id_field,
            field,
            embedding_field,
        )
        self.writer: LiveWriter | None = None

    def open(self, context: OperatorContext) -> None:
        self.writer = LiveWriter(self.name, root=self.root)

    def sink_batch(self, items: list[Any]) -> None:
        assert self.writer is not None, "open() first"
        self.writer.write(
            [
                {
                    "id": field_of(x, self.id_field, "live-writer"),
                    "delete": bool(x.get("delete")),
                    "text": x.get(self.field, ""),
                    "embedding": x.get(self.embedding_field),
                    "meta": x.get("meta"),
                }
                for x in items
            ]
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class LiveRetrieve(MapFunction):
    """Adds ``out`` ("contexts"): the top-k documents of a live collection for the
    item's ``field`` vector, and ``staleness_ms`` (age of the view answered from).

    Config: ``collection``, ``root``, ``top_k`` (5), ``max_staleness_ms`` (100),
    ``field`` ("embedding"), ``out``.
    """

    def __init__(
        self,
        *,
        collection: str,
        root: str | None = None,
        top_k: int = 5,
        max_staleness_ms: float = 100.0,
        field: str = "embedding",
        out: str = "contexts",
    ) -> None:
        super().__init__(collection=collection)
        self.name, self.root, self.top_k = collection, root, top_k
        self.max_staleness_ms, self.field, self.out = max_staleness_ms, field, out
        self.reader: LiveReader | None = None

    def open(self, context: OperatorContext) -> None:
        self.reader = LiveReader(
            self.name, root=self.root, max_staleness_ms=self.max_staleness_ms
        )

    def map(self, item: Any) -> Any:
        assert self.reader is not None, "open() first"
        got = self.reader.search(
            field_of(item, self.field, "live-retrieve"), self.top_k
        )
        return {**item, self.out: got["hits"], "staleness_ms": got["staleness_ms"]}

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
