"""The DSL of event-time operators: ``KeyedStream.window(...)`` and
``DataStream.interval_join(...)``.

They add nodes using the operators registered as ``"window"`` (flat_map) and
``"interval-join"`` (co_map), with the stream's key passed in their config, so a
YAML spec naming those operators builds the same graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

from sage_core.common.errors import SageError
from sage_core.graph.refs import operator_ref

if TYPE_CHECKING:
    from sage_core.api.datastream import DataStream, KeyedStream
    from sage_core.graph.model import KeySpec


class StreamShapeError(SageError, ValueError):
    """An event-time operator was applied to a stream of the wrong shape."""


def is_window_result(item: Any) -> bool:
    """Whether a window operator's output is a window result (not a late item)."""
    return "late" not in item


def is_late_item(item: Any) -> bool:
    """Whether a window operator's output is a late item (``late="side"``)."""
    return "late" in item


def key_config(stream: DataStream, what: str) -> Any:
    """The key of a keyed stream as operator config (field, path or callable).

    Raises:
        StreamShapeError: the stream is not keyed.
    """
    spec: KeySpec | None = stream._heads[0].key
    if spec is None:
        raise StreamShapeError(
            f"{what} needs a keyed stream: call .key_by(field) before it"
        )
    return spec.obj if spec.kind == "inline" else spec.name


def _portable(fn: Any) -> Any:
    ref = operator_ref(fn)
    return ref.name if ref.kind == "import" else fn


class WindowedStream:
    """A keyed stream cut into event-time windows; ``aggregate`` or ``reduce`` it."""

    def __init__(self, stream: KeyedStream, config: dict[str, Any]) -> None:
        self._stream, self._config = stream, config

    @overload
    def aggregate(
        self,
        kind: str,
        *,
        q: float | None = ...,
        value_field: str | None = ...,
        late: Literal["drop"] = ...,
        name: str | None = ...,
        parallelism: int | None = ...,
    ) -> DataStream: ...

    @overload
    def aggregate(
        self,
        kind: str,
        *,
        q: float | None = ...,
        value_field: str | None = ...,
        late: Literal["side"],
        name: str | None = ...,
        parallelism: int | None = ...,
    ) -> tuple[DataStream, DataStream]: ...

    def aggregate(
        self,
        kind: str,
        *,
        q: float | None = None,
        value_field: str | None = None,
        late: str = "drop",
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream | tuple[DataStream, DataStream]:
        """``{"key", "window_start", "window_end", "value"}`` per window, with the
        aggregate ``kind`` (count, sum, mean, min, max, percentile with ``q``) of
        ``item[value_field]`` (the item when unset). ``late="drop"`` drops late items
        (counted in the operator's state); ``late="side"`` returns ``(results,
        late_items)``."""
        return self._add(
            {"aggregate": kind, "q": q, "value_field": value_field},
            late,
            name,
            parallelism,
        )

    def reduce(
        self,
        fn: Callable[[Any, Any], Any] | str,
        *,
        value_field: str | None = None,
        late: str = "drop",
        name: str | None = None,
        parallelism: int | None = None,
    ) -> Any:
        """Like ``aggregate`` with ``fn(acc, value)`` folding a window's values
        (associative and commutative: items arrive out of order)."""
        return self._add(
            {"reduce": _portable(fn), "value_field": value_field},
            late,
            name,
            parallelism,
        )

    def _add(
        self,
        how: dict[str, Any],
        late: str,
        name: str | None,
        parallelism: int | None,
    ) -> Any:
        config = {**self._config, **{k: v for k, v in how.items() if v is not None}}
        config["late"] = late
        out = self._stream.flat_map(
            "window", name=name, parallelism=parallelism, **config
        )
        if late != "side":
            return out
        base = out.name
        return (
            out.filter(is_window_result, name=f"{base}-results"),
            out.filter(is_late_item, name=f"{base}-late"),
        )
