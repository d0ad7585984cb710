"""Long-term memory: an SQLite key-value store plus a vector index, under the data dir.

``<data dir>/memory/<name>/memory.sqlite`` holds every item (text, kind, session,
user, time, metadata, its embedding as float32 bytes) and a table of deletions. The
vector index (any ``vector-index`` backend, ``native-flat`` by default) is rebuilt
from the stored embeddings when a store opens, then kept in step: before each search
a store reads the rows added and deleted since it last looked, so several processes
(a writer operator and a reader operator) share one memory through the file.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sage_core.common.errors import SageError
from sage_core.common.settings import data_dir
from sage_core.vector_index import MISSING_ID, create_index
from sage_plugins.rag.common import connect_wal

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    session TEXT,
    user TEXT,
    role TEXT,
    text TEXT NOT NULL,
    ts REAL NOT NULL,
    meta TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS items_user ON items(user);
CREATE INDEX IF NOT EXISTS items_session ON items(session);
CREATE TABLE IF NOT EXISTS deleted (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id INTEGER NOT NULL
);
"""


class MemoryStoreError(SageError):
    """A memory store was misused (bad name, wrong embedding size)."""


def memory_path(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where memory ``name`` lives (``<root or data dir>/memory/<name>``).

    Raises:
        MemoryStoreError: the name has characters other than letters, digits, ``._-``.
    """
    if not _NAME.match(name):
        raise MemoryStoreError(
            f"memory name {name!r} must be 1-128 letters, digits, '.', '_' or '-'"
        )
    base = Path(root) if root is not None else data_dir()
    return base / "memory" / name


class LongTermStore:
    """One memory's items and their vector index.

    Args:
        name: the memory's name.
        dim: embedding size (checked against what the store already holds).
        root: directory above ``memory/`` (default: the data dir).
        index: vector-index backend name.
    """

    def __init__(
        self,
        name: str,
        *,
        dim: int,
        root: str | os.PathLike[str] | None = None,
        index: str = "native-flat",
    ) -> None:
        self.path = memory_path(name, root)
        self.path.mkdir(parents=True, exist_ok=True)
        self.dim, self.index_name = dim, index
        self.db = connect_wal(self.path / "memory.sqlite", _SCHEMA)
        self.index = create_index(index, dim=dim, metric="cos")
        self._last_id = 0
        self._last_deleted = 0
        self._rows: dict[int, dict[str, Any]] = {}
        self.sync()

    # -- writing ---------------------------------------------------------------

    def add(
        self,
        texts: Sequence[str],
        vectors: Any,
        *,
        kind: str = "turn",
        session: str | None = None,
        user: str | None = None,
        role: str | None = None,
        meta: Mapping[str, Any] | None = None,
        ts: float | None = None,
    ) -> list[int]:
        """Store ``texts`` with their embeddings; their ids."""
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (len(texts), self.dim):
            raise MemoryStoreError(
                f"memory {self.path.name!r} holds {self.dim}-d embeddings; got "
                f"shape {matrix.shape} for {len(texts)} texts: use the embedder "
                f"the memory was made with"
            )
        when = time.time() if ts is None else ts
        blob = json.dumps(dict(meta or {}))
        ids = []
        with self.db:
            for text, vec in zip(texts, matrix, strict=True):
                cur = self.db.execute(
                    "INSERT INTO items (kind, session, user, role, text, ts, meta, "
                    "vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (kind, session, user, role, text, when, blob, vec.tobytes()),
                )
                ids.append(int(cur.lastrowid or 0))
        self.sync()
        return ids

    def forget(self, *, user: str | None = None, session: str | None = None) -> int:
        """Delete every item of ``user`` (and/or ``session``); how many went."""
        if user is None and session is None:
            raise MemoryStoreError("forget needs user= or session=")
        clause, args = _where(user=user, session=session)
        with self.db:
            ids = [r[0] for r in self.db.execute(f"SELECT id FROM items{clause}", args)]
            self.db.executemany(
                "INSERT INTO deleted (id) VALUES (?)", [(i,) for i in ids]
            )
            self.db.execute(f"DELETE FROM items{clause}", args)
        self.sync()
        return len(ids)

    # -- reading ---------------------------------------------------------------

    def sync(self) -> None:
        """Bring the in-memory index up to the file (rows added/deleted elsewhere)."""
        rows = self.db.execute(
            "SELECT id, kind, session, user, role, text, ts, meta, vector FROM items "
            "WHERE id > ? ORDER BY id",
            (self._last_id,),
        ).fetchall()
        if rows:
            vecs = np.frombuffer(b"".join(r[8] for r in rows), dtype=np.float32)
            ids = np.array([r[0] for r in rows], dtype=np.uint64)
            self.index.add(ids, vecs.reshape(len(rows), self.dim))
            for r in rows:
                self._rows[r[0]] = {
                    "id": r[0],
                    "kind": r[1],
                    "session": r[2],
                    "user": r[3],
                    "role": r[4],
                    "text": r[5],
                    "ts": r[6],
                    "meta": json.loads(r[7]),
                }
            self._last_id = rows[-1][0]
        gone = self.db.execute(
            "SELECT seq, id FROM deleted WHERE seq > ? ORDER BY seq",
            (self._last_deleted,),
        ).fetchall()
        if gone:
            dead = [i for _, i in gone if i in self._rows]
            if dead:
                self.index.remove(np.array(dead, dtype=np.uint64))
                for i in dead:
                    del self._rows[i]
            self._last_deleted = gone[-1][0]

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, item_id: int) -> dict[str, Any] | None:
        """The item stored under ``item_id`` (exact lookup), or None."""
        self.sync()
        row = self._rows.get(item_id)
        return dict(row) if row else None

    def items(
        self, *, user: str | None = None, session: str | None = None
    ) -> list[dict[str, Any]]:
        """Every item of ``user``/``session``, oldest first."""
        self.sync()
        return [
            dict(r)
            for r in self._rows.values()
            if (user is None or r["user"] == user)
            and (session is None or r["session"] == session)
        ]

    def search(
        self,
        vector: Any,
        k: int,
        *,
        user: str | None = None,
        exclude: set[int] | None = None,
    ) -> list[dict[str, Any]]:
        """The ``k`` items most similar to ``vector`` (of ``user`` when given), with
        ``score``, best first; ids in ``exclude`` are left out."""
        self.sync()
        allowed = [
            i
            for i, r in self._rows.items()
            if (user is None or r["user"] == user) and not (exclude and i in exclude)
        ]
        if not allowed or k <= 0:
            return []
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        ids, scores = self.index.search(
            q, min(k, len(allowed)), allowed_ids=np.array(allowed, dtype=np.uint64)
        )
        return [
            {**self._rows[int(i)], "score": float(s)}
            for i, s in zip(ids[0], scores[0], strict=True)
            if i != MISSING_ID
        ]

    def close(self) -> None:
        self.db.close()


def _where(**fields: str | None) -> tuple[str, tuple[Any, ...]]:
    parts = [(f"{k} = ?", v) for k, v in fields.items() if v is not None]
    if not parts:
        return "", ()
    return " WHERE " + " AND ".join(p for p, _ in parts), tuple(v for _, v in parts)
