"""The keyed join: a symmetric hash join over each key's items on both inputs.

Every item is stored under its key on its side; each new item is joined with the
items of the same key already stored on the other side, so the output is every
matching (left, right) pair exactly once, whatever order the two inputs arrive in.
``window`` keeps only the last N items per key and side; ``window_s`` only those that
arrived in the last T seconds (both make the result depend on arrival order).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sage_core.functions import JoinFunction
from sage_core.runtime.operators import Executor


class JoinExecutor(Executor):
    """Runs a JoinFunction with the runtime-kept keyed store (see module doc)."""

    keys: tuple[Callable[[Any], Any], Callable[[Any], Any]]

    def setup(self, keys: tuple[Callable[[Any], Any], Callable[[Any], Any]]) -> None:
        self.keys = keys
        window = self.op.options.get("window")
        window_s = self.op.options.get("window_s")
        self.window = int(window) if window else None
        self.window_s = float(window_s) if window_s else None
        # key -> (left items, right items); entries are (arrival time, item)
        self.store: dict[
            Any, tuple[deque[tuple[float, Any]], deque[tuple[float, Any]]]
        ] = {}

    def _side(
        self, key: Any, index: int
    ) -> tuple[deque[tuple[float, Any]], deque[tuple[float, Any]]]:
        sides = self.store.get(key)
        if sides is None:
            sides = (deque(maxlen=self.window), deque(maxlen=self.window))
            self.store[key] = sides
        return sides

    def process(self, items: list[Any], input_index: int) -> list[Any]:
        fn = self.fn
        assert isinstance(fn, JoinFunction)
        join = fn.join
        key_of = self.keys[input_index]
        now = time.monotonic()
        horizon = now - self.window_s if self.window_s else None
        out: list[Any] = []
        for x in items:
            try:
                key = key_of(x)
                sides = self._side(key, input_index)
                mine, other = sides[input_index], sides[1 - input_index]
                if horizon is not None:
                    while other and other[0][0] < horizon:
                        other.popleft()
                if input_index == 0:
                    matched = [join(x, y) for _, y in other]
                else:
                    matched = [join(y, x) for _, y in other]
                mine.append((now, x))
            except Exception as exc:  # noqa: BLE001 - reported through failed()
                self.failed(items, x, exc)
                continue
            out.extend(matched)
        return out

    def get_state(self) -> dict[str, Any]:
        """The keyed store: ``{key: {"left": [...], "right": [...]}}``."""
        return {
            k: {"left": [x for _, x in left], "right": [x for _, x in right]}
            for k, (left, right) in self.store.items()
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Take back ``get_state()`` (window ages restart at the restore)."""
        now = time.monotonic()
        for key, sides in state.items():
            left, right = self._side(key, 0)
            left.extend((now, x) for x in sides["left"])
            right.extend((now, x) for x in sides["right"])
