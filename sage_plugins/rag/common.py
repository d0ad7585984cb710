"""Shared pieces of the RAG operators: item fields, errors, backend contracts.

Items are dicts. Documents and chunks carry ``id``, ``text`` and ``meta``; queries
carry ``query`` and gain ``embedding``, ``contexts`` (``[{id, text, score, meta}]``,
best first), ``context`` (refined text), ``prompt``/``messages``, ``answer`` and
``generation`` (timing) as they pass the stages.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sage_core.backends import BackendError, backend_class
from sage_core.common.errors import SageError, UnknownPluginError
from sage_core.contract import Contract, ContractError


class RagError(SageError):
    """A RAG operator got an item or config it cannot use (the message says which)."""


class MissingFieldError(RagError, KeyError):
    """An item lacks the field an operator reads."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def field_of(item: Any, field: str, operator: str) -> Any:
    """``item[field]``, or a :class:`MissingFieldError` naming operator and keys."""
    if not isinstance(item, Mapping):
        raise MissingFieldError(
            f"{operator}: expected a dict item with {field!r}, got "
            f"{type(item).__name__} {str(item)[:80]!r}"
        )
    try:
        return item[field]
    except KeyError:
        raise MissingFieldError(
            f"{operator}: item has no {field!r} field (keys: "
            f"{', '.join(sorted(map(str, item))) or 'none'}); an earlier stage "
            f"should add it, or configure field="
        ) from None


def text_of(item: Any, field: str, operator: str) -> str:
    """A string field of ``item`` (a bare string item counts as that field)."""
    value = item if isinstance(item, str) else field_of(item, field, operator)
    if not isinstance(value, str):
        raise RagError(
            f"{operator}: field {field!r} must be a string, got {type(value).__name__}"
        )
    return value


def with_fields(item: Any, field: str, **updates: Any) -> dict[str, Any]:
    """A copy of the item (a bare string becomes ``{field: item}``) with updates."""
    base = {field: item} if isinstance(item, str) else dict(item)
    base.update(updates)
    return base


def backend_contract(
    operator: str,
    config: Mapping[str, Any],
    *,
    default_backend: str,
    batch_size: int,
    max_wait_ms: float = 0.0,
    streaming: bool = False,
) -> Contract:
    """The contract of a stage calling a backend: its GPUs and batching.

    Raises:
        ContractError: unknown backend or invalid numbers (reported by validation
            with the node's name).
    """
    name = config.get("backend", default_backend)
    backend = config.get("backend_config") or {}
    try:
        cls = backend_class(str(name))
        gpu = cls.gpu_for(backend)
        engine = cls.engine_for(backend)
    except (UnknownPluginError, BackendError) as exc:
        raise ContractError(f"{operator}: {exc}") from None
    return Contract(
        gpu=gpu,
        batch_size=int(config.get("batch_size", batch_size)),
        max_wait_ms=float(config.get("max_wait_ms", max_wait_ms)),
        streaming=streaming,
        engine=engine,
    )


def connect_wal(
    file: Path, schema: str, patience_s: float = 30.0
) -> sqlite3.Connection:
    """A connection to the SQLite database ``file`` in WAL mode with ``schema``
    applied, usable from any thread (callers serialise their own use). Switching a
    new file to WAL while another process or replica does the same can fail at once
    with "database is locked" (SQLite skips the busy handler there): retried for up
    to ``patience_s``."""
    db = sqlite3.connect(file, timeout=30, check_same_thread=False)
    deadline = time.monotonic() + patience_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a crash of the process, not of the OS
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(schema)
            return db
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.01)
