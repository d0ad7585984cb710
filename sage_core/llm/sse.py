"""Server-sent events and the OpenAI wire format carried in them.


:class:`SSEDecoder` takes raw bytes in whatever pieces the network delivers and
returns complete events, following the WHATWG event-stream rules: lines end in
``\\r\\n``, ``\\n`` or ``\\r`` (also when split across pieces), ``:`` starts a comment,
``data`` lines of one event are joined with ``\\n``, one space after the colon is
dropped, a blank line ends the event, and an event without data is not dispatched.
UTF-8 sequences split across pieces are reassembled.

The helpers below read OpenAI-shaped payloads: :func:`stream_event_json` (one streamed
chunk, raising :class:`StreamError` on malformed data or an error event),
:func:`choice_text` (the text of a chat delta or completion choice) and
:func:`parse_completion` (a non-streamed answer as a ``Generation``).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sage_core.backends import Generation
from sage_core.llm.client_errors import StreamError, parse_error_body


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its joined ``data``, and ``event``/``id`` if given."""

    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """Feed bytes, get events.

    Example::

        decoder = SSEDecoder()
        for chunk in chunks:
            for event in decoder.feed(chunk):
                handle(event.data)
        leftover = decoder.flush()  # an event not ended by a blank line
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""
        self._pending_cr = False
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Events completed by ``chunk`` (possibly none)."""
        return self._feed_text(self._utf8.decode(chunk))

    def flush(self) -> list[SSEEvent]:
        """End of stream: an unterminated last event is dispatched if it has data."""
        events = self._feed_text(self._utf8.decode(b"", final=True))
        if self._line:
            self._field(self._line)
            self._line = ""
        event = self._dispatch()
        if event is not None:
            events.append(event)
        return events

    def _feed_text(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = False
        start = 0
        n = len(text)
        i = 0
        while i < n:
            ch = text[i]
            if ch == "\r" or ch == "\n":
                line = self._line + text[start:i]
                self._line = ""
                if ch == "\r":
                    if i + 1 < n and text[i + 1] == "\n":
                        i += 1
                    elif i + 1 == n:
                        self._pending_cr = True
                if line:
                    self._field(line)
                else:
                    event = self._dispatch()
                    if event is not None:
                        events.append(event)
                start = i + 1
            i += 1
        self._line += text[start:]
        return events

    def _field(self, line: str) -> None:
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], None
        if not data:
            return None
        return SSEEvent(data="\n".join(data), event=event or None, id=self._id)


def opt_int(value: Any) -> int | None:
    """``int(value)``, or None for None."""
    return None if value is None else int(value)


def choice_text(choice: Mapping[str, Any]) -> str:
    """The text of one streamed choice: a chat ``delta.content`` or a ``text``."""
    delta = choice.get("delta")
    if isinstance(delta, Mapping):
        return str(delta.get("content") or "")
    return str(choice.get("text") or "")


def stream_event_json(event: SSEEvent, endpoint: str, model: str) -> dict[str, Any]:
    """The JSON object of one streamed chunk.

    Raises:
        StreamError: the data is not a JSON object, or it carries an error.
    """
    try:
        data = json.loads(event.data)
    except ValueError:
        raise StreamError(
            f"{endpoint} sent a malformed stream event: {event.data[:200]!r}",
            endpoint=endpoint,
            model=model,
        ) from None
    if not isinstance(data, dict):
        raise StreamError(
            f"{endpoint} sent a stream event that is not an object: "
            f"{event.data[:200]!r}",
            endpoint=endpoint,
            model=model,
        )
    if "error" in data or event.event == "error":
        message, _, _ = parse_error_body(data)
        raise StreamError(
            f"{endpoint} reported an error mid-stream for model {model!r}: {message}",
            endpoint=endpoint,
            model=model,
        )
    return data


def parse_completion(
    data: Any, model: str, latency: float, endpoint: str
) -> Generation:
    """A non-streamed chat or text completion answer as a ``Generation``.

    Raises:
        StreamError: the answer has no completion choice.
    """
    try:
        choice = data["choices"][0]
        if "message" in choice:
            text = choice["message"].get("content") or ""
        else:
            text = choice.get("text") or ""
        usage = data.get("usage") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        raise StreamError(
            f"{endpoint} answered without a completion choice: {str(data)[:200]}",
            endpoint=endpoint,
            model=model,
        ) from None
    completion_tokens = usage.get("completion_tokens")
    return Generation(
        text=str(text),
        model=str(data.get("model") or model),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=opt_int(usage.get("prompt_tokens")),
        completion_tokens=int(completion_tokens) if completion_tokens else 0,
        latency_s=latency,
        source=endpoint,
    )
