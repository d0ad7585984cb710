"""The ``http-request`` source and ``http-response`` sink of served pipelines.

``sage serve`` / ``env.serve()`` put them in place of a pipeline's source and sink
(see :mod:`sage_core.serve`); both find the serving process's request hub by the
``hub`` id in their config.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sage_core.functions import OperatorContext, SinkFunction, SourceFunction
from sage_core.serve.hub import RequestHub, hub_for

#: how long the source waits for a request before looking whether it should stop
POLL_S = 0.05


class _Requests(Iterator[Any]):
    """Blocks for the next request; ends when the hub closes and is empty, or when
    a newer job generation took over the hub (an autoscaled, rolled job)."""

    def __init__(self, hub: RequestHub, generation: int) -> None:
        self.hub, self.generation = hub, generation

    def __next__(self) -> Any:
        hub, gen = self.hub, self.generation
        while True:
            env = hub.take(POLL_S, gen)
            if env is not None:
                return env
            if hub.retired(gen):
                raise StopIteration


class HttpRequestSource(SourceFunction):
    """The requests posted to a served pipeline, one item each (one replica);
    ``generation`` numbers the jobs that take turns on one hub."""

    def __init__(self, *, hub: str, generation: int = 0) -> None:
        super().__init__(hub=hub, generation=generation)
        self.hub_id, self.generation = hub, int(generation)

    def run(self, context: OperatorContext) -> Iterable[Any]:
        return _Requests(hub_for(self.hub_id), self.generation)


class HttpResponseSink(SinkFunction):
    """Hands each result back to the request waiting for it."""

    def __init__(self, *, hub: str, generation: int = 0) -> None:
        super().__init__(hub=hub, generation=generation)
        self.hub_id = hub
        self._hub: RequestHub | None = None

    def open(self, context: OperatorContext) -> None:
        self._hub = hub_for(self.hub_id)

    def sink(self, item: Any) -> None:
        self.sink_batch([item])

    def sink_batch(self, items: list[Any]) -> None:
        assert self._hub is not None, "sink_batch() before open()"
        self._hub.deliver(items)
