"""Conversational memory for Python callers and the memory operators.

* **Short-term**: per session, the last turns, bounded by a count (``recent_turns``)
  and a token budget (``recent_tokens``). Plain data (``get_state``/``restore_state``)
  so an operator holding it snapshots it with the job.
* **Long-term**: every turn and fact in a :class:`LongTermStore` (SQLite + vector
  index, under the data dir), with session, user and time; ``forget(user=...)``
  deletes a user everywhere.

``context(session, user, query, budget_tokens)`` assembles what a prompt gets: the
recent turns (newest kept first) and then the long-term items most similar to the
query that are not already among them, within the token budget; it reports what it
chose, the scores, and what did not fit.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Any

from sage_core.backends import create_embedding_backend
from sage_plugins.memory.store import LongTermStore, MemoryStoreError
from sage_plugins.rag.text import token_counter


class Memory:
    """Short-term windows per session plus a persisted long-term store.

    Args:
        name: the memory's name (its directory under ``<data dir>/memory``).
        embedder: embedding backend name (``sentence-transformers``: packaged MiniLM;
            ``hash`` for a lexical offline one).
        embedder_config: passed to the backend.
        recent_turns: turns kept per session in the short-term window.
        recent_tokens: token budget of that window (oldest turns leave first).
        tokenizer: ``approx`` (default) or a ``tokenizer.json`` path.
        root: directory above ``memory/`` (default: the data dir).
        index: vector-index backend of the long-term store.
    """

    def __init__(
        self,
        name: str,
        *,
        embedder: str = "sentence-transformers",
        embedder_config: dict[str, Any] | None = None,
        recent_turns: int = 6,
        recent_tokens: int = 512,
        tokenizer: str | None = None,
        root: str | os.PathLike[str] | None = None,
        index: str = "native-flat",
    ) -> None:
        if recent_turns < 0 or recent_tokens < 0:
            raise MemoryStoreError("recent_turns and recent_tokens must be >= 0")
        self.embedder = create_embedding_backend(embedder, **(embedder_config or {}))
        self.count: Callable[[str], int] = token_counter(tokenizer)
        self.recent_turns, self.recent_tokens = recent_turns, recent_tokens
        self.store = LongTermStore(name, dim=self.embedder.dim, root=root, index=index)
        # session -> deque of {"id", "role", "text", "tokens"}
        self.sessions: dict[str, deque[dict[str, Any]]] = {}

    # -- writing ---------------------------------------------------------------

    def add_turn(
        self,
        session: str,
        text: str,
        *,
        user: str | None = None,
        role: str = "user",
        meta: dict[str, Any] | None = None,
        ts: float | None = None,
    ) -> int:
        """Record one turn: in the session's window and in long-term memory."""
        vec = self.embedder.embed([text])
        (item_id,) = self.store.add(
            [text],
            vec,
            kind="turn",
            session=session,
            user=user,
            role=role,
            meta=meta,
            ts=ts,
        )
        window = self.sessions.setdefault(session, deque())
        window.append(
            {"id": item_id, "role": role, "text": text, "tokens": self.count(text)}
        )
        self._trim(window)
        return item_id

    def add_fact(
        self,
        text: str,
        *,
        user: str | None = None,
        session: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Store a fact in long-term memory only."""
        (item_id,) = self.store.add(
            [text],
            self.embedder.embed([text]),
            kind="fact",
            session=session,
            user=user,
            meta=meta,
        )
        return item_id

    def _trim(self, window: deque[dict[str, Any]]) -> None:
        while window and (
            len(window) > self.recent_turns
            or sum(t["tokens"] for t in window) > self.recent_tokens
        ):
            window.popleft()

    def forget(self, *, user: str | None = None, session: str | None = None) -> int:
        """Delete a user's (or a session's) items, short- and long-term."""
        gone = self.store.forget(user=user, session=session)
        if session is not None:
            self.sessions.pop(session, None)
        if user is not None:
            kept = {i["id"] for i in self.store.items(user=None)}
            for s, window in list(self.sessions.items()):
                self.sessions[s] = deque(t for t in window if t["id"] in kept)
        return gone

    # -- reading ---------------------------------------------------------------

    def recent(self, session: str) -> list[dict[str, Any]]:
        """The session's short-term window, oldest first."""
        return list(self.sessions.get(session, ()))

    def context(
        self,
        session: str,
        query: str,
        *,
        user: str | None = None,
        budget_tokens: int = 1024,
        top_k: int = 5,
    ) -> dict[str, Any]:
        """What a prompt for ``query`` gets within ``budget_tokens``.

        Returns:
            ``{"recent": [turns], "recalled": [items with score], "text": str,
            "tokens": int, "budget": int, "left_out": [ids that did not fit]}``.
        """
        recent: list[dict[str, Any]] = []
        used = 0
        left_out: list[int] = []
        for turn in reversed(self.recent(session)):  # newest first
            if used + turn["tokens"] <= budget_tokens:
                recent.insert(0, turn)
                used += turn["tokens"]
            else:
                left_out.append(turn["id"])
        seen = {t["id"] for t in self.recent(session)}
        hits = self.store.search(
            self.embedder.embed([query])[0], top_k, user=user, exclude=seen
        )
        recalled = []
        for hit in hits:
            n = self.count(hit["text"])
            if used + n <= budget_tokens:
                recalled.append({**hit, "tokens": n})
                used += n
            else:
                left_out.append(hit["id"])
        lines = [f"[memory] {h['text']}" for h in recalled]
        lines += [f"[{t['role']}] {t['text']}" for t in recent]
        return {
            "recent": recent,
            "recalled": recalled,
            "text": "\n".join(lines),
            "tokens": used,
            "budget": budget_tokens,
            "left_out": left_out,
        }

    # -- state -----------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """The short-term windows (long-term memory is its own file)."""
        return {s: list(w) for s, w in self.sessions.items()}

    def restore_state(self, state: dict[str, Any]) -> None:
        self.sessions = {s: deque(w) for s, w in state.items()}

    def close(self) -> None:
        self.store.close()
        self.embedder.close()
