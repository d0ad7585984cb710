"""Stream operators on event time: windowed aggregates and interval joins.

``window`` (flat_map) and ``interval-join`` (co_map) are what
``KeyedStream.window(...).aggregate(...)`` and ``DataStream.interval_join(...)`` add
to a graph; YAML specs use them by these names.
"""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from sage_plugins.streams.aggregates import StreamConfigError
from sage_plugins.streams.interval_join import IntervalJoin
from sage_plugins.streams.windows import Window

__all__ = ["IntervalJoin", "StreamConfigError", "Window"]


@hookimpl
def register_operators(register: Any) -> None:
    """The event-time operators, by the names pipelines use."""
    register("window", Window, role="flat_map", description=Window.__doc__)
    register(
        "interval-join", IntervalJoin, role="co_map", description=IntervalJoin.__doc__
    )
