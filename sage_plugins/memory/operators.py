"""The ``memory-read`` and ``memory-write`` operators over a :class:`Memory`.

``memory-read`` (map, key the stream by session): adds ``out`` (``"memory"``) to each
item: the context ``Memory.context`` assembled for the item's text within
``budget_tokens`` (recent turns + recalled long-term items, what was chosen and left
out). With ``record=True`` (default) it then records the item's text as a turn of its
session, in order, so turn *n* sees turns 1..n-1. Its short-term windows are
managed keyed state (``context.keyed_state``, by the session field's value): key the
stream by that field and they are checkpointed by key group and move with their
sessions when a job resumes at another parallelism.

``memory-write`` (map): stores the item's ``field`` (e.g. a generated answer, or a
fact) in long-term memory, with the item's session and user, and adds its id.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from sage_core.contract import Contract
from sage_core.functions import MapFunction, OperatorContext
from sage_plugins.memory.memory import Memory
from sage_plugins.rag.common import field_of

_MEMORY_OPTIONS = (
    "embedder",
    "embedder_config",
    "recent_turns",
    "recent_tokens",
    "tokenizer",
    "root",
    "index",
)


def _memory_config(config: dict[str, Any]) -> dict[str, Any]:
    """The :class:`Memory` options among an operator's config.

    Raises:
        TypeError: an unknown option (the runtime reports it as a ConfigError).
    """
    unknown = sorted(set(config) - set(_MEMORY_OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown config {unknown}; memory options are {list(_MEMORY_OPTIONS)}"
        )
    return {k: v for k, v in config.items() if v is not None}


class MemoryRead(MapFunction):
    """Adds the memory context of each turn (recent + recalled within a budget),
    then records the turn.

    Config: ``memory`` (name), ``budget_tokens`` (1024), ``top_k`` (5), ``record``
    (True), ``session_field`` ("session"), ``user_field`` ("user"), ``field``
    ("text"), ``role`` ("user"), ``out`` ("memory"), and the :class:`Memory` options
    (``embedder``, ``embedder_config``, ``recent_turns``, ``recent_tokens``,
    ``tokenizer``, ``root``, ``index``).
    """

    contract = Contract(state="stateful")

    def __init__(
        self,
        *,
        memory: str,
        budget_tokens: int = 1024,
        top_k: int = 5,
        record: bool = True,
        session_field: str = "session",
        user_field: str = "user",
        field: str = "text",
        role: str = "user",
        out: str = "memory",
        **memory_options: Any,
    ) -> None:
        super().__init__(memory=memory, **memory_options)
        self.name, self.budget, self.top_k, self.record = (
            memory,
            budget_tokens,
            top_k,
            record,
        )
        self.session_field, self.user_field = session_field, user_field
        self.field, self.role, self.out = field, role, out
        self.options = _memory_config(memory_options)
        self.mem: Memory | None = None
        self.windows: dict[Any, Any] = {}

    def open(self, context: OperatorContext) -> None:
        self.mem = Memory(self.name, **self.options)
        # the windows live in the keyed state (restored before open), under the
        # routing key; the Memory sees the same deques under their string ids
        self.windows = context.keyed_state
        for key, window in self.windows.items():
            self.mem.sessions[str(key)] = window

    def map(self, item: Any) -> Any:
        assert self.mem is not None, "open() first"
        text = field_of(item, self.field, "memory-read")
        key = field_of(item, self.session_field, "memory-read")
        session = str(key)
        window = self.mem.sessions.get(session)
        if window is None:  # new here, or restored from a checkpoint
            window = self.mem.sessions[session] = self.windows.get(key) or deque()
        self.windows[key] = window
        user = item.get(self.user_field)
        ctx = self.mem.context(
            session, text, user=user, budget_tokens=self.budget, top_k=self.top_k
        )
        if self.record:
            self.mem.add_turn(session, text, user=user, role=self.role)
        return {**item, self.out: ctx}

    def close(self) -> None:
        if self.mem is not None:
            self.mem.close()


class MemoryWrite(MapFunction):
    """Stores each item's ``field`` in long-term memory and adds ``memory_id``.

    Config: ``memory`` (name), ``field`` ("text"), ``kind`` ("turn" or "fact"),
    ``role`` ("assistant"), ``session_field``, ``user_field``, and the
    :class:`Memory` options.
    """

    def __init__(
        self,
        *,
        memory: str,
        field: str = "text",
        kind: str = "turn",
        role: str = "assistant",
        session_field: str = "session",
        user_field: str = "user",
        **memory_options: Any,
    ) -> None:
        super().__init__(memory=memory, **memory_options)
        if kind not in ("turn", "fact"):
            raise ValueError(f"kind must be 'turn' or 'fact', got {kind!r}")
        self.name, self.field, self.kind, self.role = memory, field, kind, role
        self.session_field, self.user_field = session_field, user_field
        self.options = _memory_config(memory_options)
        self.mem: Memory | None = None

    def open(self, context: OperatorContext) -> None:
        self.mem = Memory(self.name, **self.options)

    def map_batch(self, items: list[Any]) -> list[Any]:
        assert self.mem is not None, "open() first"
        out = []
        store, embedder = self.mem.store, self.mem.embedder
        for item in items:
            text = field_of(item, self.field, "memory-write")
            session = item.get(self.session_field)
            (item_id,) = store.add(
                [text],
                embedder.embed([text]),
                kind=self.kind,
                session=None if session is None else str(session),
                user=item.get(self.user_field),
                role=self.role if self.kind == "turn" else None,
            )
            out.append({**item, "memory_id": item_id})
        return out

    def close(self) -> None:
        if self.mem is not None:
            self.mem.close()
