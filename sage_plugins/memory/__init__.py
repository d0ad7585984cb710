"""Conversational memory: short-term windows per session, long-term items in SQLite
plus a vector index, and the ``memory-read`` / ``memory-write`` operators."""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from sage_plugins.memory.memory import Memory
from sage_plugins.memory.operators import MemoryRead, MemoryWrite
from sage_plugins.memory.store import LongTermStore, MemoryStoreError

__all__ = ["LongTermStore", "Memory", "MemoryRead", "MemoryStoreError", "MemoryWrite"]


@hookimpl
def register_operators(register: Any) -> None:
    """The memory operators, by the names pipelines use."""
    register("memory-read", MemoryRead, role="map", description=MemoryRead.__doc__)
    register("memory-write", MemoryWrite, role="map", description=MemoryWrite.__doc__)
