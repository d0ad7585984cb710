"""Short, bounded previews of items for error messages.

An item that failed is shown to help find it, not to dump it: arrays (numpy, torch,
anything with ``shape`` and ``dtype``) appear as their shape and dtype, containers
show their first entries, long strings are cut, and the whole preview stays within a
character limit.
"""

from __future__ import annotations

import reprlib
from typing import Any

#: default length of a preview, in characters
PREVIEW_LIMIT = 200


class _Preview(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxstring = 60
        self.maxother = 60
        self.maxdict = 6
        self.maxlist = self.maxtuple = 6

    def repr1(self, x: Any, level: int) -> str:
        shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
        if isinstance(shape, tuple) and shape and dtype is not None:
            return f"{type(x).__name__}(shape={shape}, dtype={dtype})"
        return super().repr1(x, level)


_PREVIEW = _Preview()


def preview(item: Any, limit: int = PREVIEW_LIMIT) -> str:
    """A one-line description of ``item`` of at most ``limit`` characters."""
    text = _PREVIEW.repr(item).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
