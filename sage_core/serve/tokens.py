"""Tokens from inside a served pipeline to the request waiting for them.

While a :class:`~sage_core.serve.envelope.ServedOperator` calls the operator it
wraps, :func:`serving` names the hub and the request ids of the items it passed;
an operator that produces text piece by piece (``generate``) asks
:func:`token_sinks` for one :class:`TokenSink` per item: a callable taking each
piece as it is produced, or None when the request did not ask for a stream (or the
operator does not run inside ``sage serve``). The pieces go to the request's
:class:`~sage_core.serve.hub.RequestHub` queue, which the HTTP side sends as SSE
deltas; a piece already sent (an operator retried after a failure in its batch)
is not sent twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the hub module imports the envelopes, which import this one
    from sage_core.serve.hub import RequestHub

_current: ContextVar[tuple[str, tuple[str, ...]] | None] = ContextVar(
    "sage_serve_requests", default=None
)


@contextmanager
def serving(hub_id: str | None, rids: Sequence[str]) -> Iterator[None]:
    """The items an operator is given now belong to requests ``rids`` of the hub
    ``hub_id`` (in order)."""
    if hub_id is None:
        yield
        return
    token = _current.set((hub_id, tuple(rids)))
    try:
        yield
    finally:
        _current.reset(token)


class TokenSink:
    """Sends the pieces of text produced for one request (in order)."""

    __slots__ = ("hub", "offset", "rid")

    def __init__(self, hub: RequestHub, rid: str) -> None:
        self.hub, self.rid, self.offset = hub, rid, 0

    def __call__(self, piece: str) -> None:
        self.hub.push_token(self.rid, self.offset, piece)
        self.offset += len(piece)


def token_sinks(n: int) -> list[TokenSink | None]:
    """For each of the ``n`` items the operator was just given, a sink for its
    generated text when its request waits for a stream, else None."""
    from sage_core.serve.hub import HubNotFound, hub_for
    from sage_core.serve.remote import HubUnreachable

    current = _current.get()
    if current is None or len(current[1]) != n:
        return [None] * n
    hub_id, rids = current
    try:
        hub = hub_for(hub_id)
    except (HubNotFound, HubUnreachable):
        return [None] * n
    return [TokenSink(hub, rid) if hub.wants_tokens(rid) else None for rid in rids]
