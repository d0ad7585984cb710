"""An example SAGE plugin: one operator and one router, registered through hooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sage_core import hookimpl
from sage_core.functions import MapFunction
from sage_core.routing import Candidate, Router, RouteRequest, healthy_indices


class TextStats(MapFunction):
    """Counts the words and characters of a text item (or of its ``field``)."""

    def __init__(self, *, field: str = "text") -> None:
        super().__init__(field=field)
        self.field = field

    def map(self, item: Any) -> dict[str, Any]:
        text = item[self.field] if isinstance(item, dict) else str(item)
        return {"text": text, "words": len(text.split()), "chars": len(text)}


class PrimaryBackup(Router):
    """Sends everything to the first healthy candidate (active/passive failover)."""

    name = "primary-backup"

    def route(
        self, request: RouteRequest, candidates: Sequence[Candidate]
    ) -> list[int]:
        return healthy_indices(candidates)[:1]


@hookimpl
def register_operators(register: Any) -> None:
    register("text-stats", TextStats, role="map", description=TextStats.__doc__)


@hookimpl
def register_routers(register: Any) -> None:
    register("primary-backup", PrimaryBackup, scope="any")
