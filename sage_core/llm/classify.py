"""Request classification: which class (chat, completion, embedding), which model,
priority, SLO deadline and token estimate, from the route, headers and JSON body.

Validation is strict where the gateway must decide (model, stream, our scheduling
fields, shapes of ``messages``/``prompt``/``input``) and leaves the rest of the body to
the engine, which answers its own 400s for parameters it does not accept.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sage_core.llm.errors import InvalidRequestError

CHAT = "chat"
COMPLETION = "completion"
EMBEDDING = "embedding"
CLASSES = (CHAT, COMPLETION, EMBEDDING)

#: request class -> engine kind that serves it
ENGINE_KIND = {CHAT: "llm", COMPLETION: "llm", EMBEDDING: "embedding"}

PATHS = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETION,
    "/v1/embeddings": EMBEDDING,
}

PRIORITY_NAMES = {"low": 0, "normal": 1, "high": 2, "critical": 3}
DEFAULT_PRIORITY = 1
MAX_PRIORITY = 9
#: output budget assumed when a generation request gives no max_tokens
DEFAULT_OUTPUT_TOKENS = 256
#: body fields that steer the gateway and are removed before forwarding
GATEWAY_FIELDS = ("priority", "slo_deadline_ms")

_ids = itertools.count(1)


@dataclass(slots=True, eq=False)
class LLMRequest:
    """One admitted request as the control plane sees it.

    Attributes:
        id: gateway request id (``req-N``), echoed in ``X-Request-Id``.
        kind: ``"chat"``, ``"completion"`` or ``"embedding"``.
        model: requested model name.
        body: JSON body to forward (gateway fields removed).
        stream: the client asked for server-sent events.
        priority: 0 (low) .. 9; higher is served first by priority-aware policies.
        slo_ms: the latency objective in ms, or None.
        arrival: ``time.monotonic()`` when the gateway received it.
        deadline: ``arrival + slo_ms / 1000`` or ``math.inf``.
        tokens: estimated prompt + output tokens (routing and load accounting).
        size: number of inputs (embeddings) or 1.
        prefix: prompt text for prefix-locality routing.
        headers: request headers, lower-case names.
        api_key: bearer token, if any.
    """

    kind: str
    model: str
    body: dict[str, Any]
    stream: bool = False
    priority: int = DEFAULT_PRIORITY
    slo_ms: float | None = None
    arrival: float = field(default_factory=time.monotonic)
    deadline: float = math.inf
    tokens: int = 0
    size: int = 1
    prefix: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    api_key: str | None = None
    id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    seq: int = 0

    @property
    def pool(self) -> str:
        """The queue key: requests of one pool can run on the same engines."""
        return f"{ENGINE_KIND[self.kind]}:{self.model}"

    @property
    def engine_kind(self) -> str:
        return ENGINE_KIND[self.kind]


def parse_priority(value: object, source: str) -> int:
    """An integer 0..9 or one of low/normal/high/critical."""
    if isinstance(value, bool):
        raise InvalidRequestError(
            f"{source} must be an integer 0..{MAX_PRIORITY} or one of "
            f"{', '.join(PRIORITY_NAMES)}",
            param="priority",
        )
    if isinstance(value, str):
        text = value.strip().lower()
        if text in PRIORITY_NAMES:
            return PRIORITY_NAMES[text]
        try:
            value = int(text)
        except ValueError:
            raise InvalidRequestError(
                f"{source}={value!r}: use an integer 0..{MAX_PRIORITY} or one of "
                f"{', '.join(PRIORITY_NAMES)}",
                param="priority",
            ) from None
    if not isinstance(value, int) or not 0 <= value <= MAX_PRIORITY:
        raise InvalidRequestError(
            f"{source}={value!r} is out of range 0..{MAX_PRIORITY}", param="priority"
        )
    return value


def parse_deadline_ms(value: object, source: str) -> float:
    """A positive number of milliseconds."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidRequestError(
            f"{source} must be a positive number of milliseconds",
            param="slo_deadline_ms",
        )
    return float(value)


def _text_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _check_messages(messages: object) -> tuple[str, int]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(
            "'messages' must be a non-empty list of {role, content} objects",
            param="messages",
        )
    parts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError(
                f"messages[{i}] must be an object", param=f"messages[{i}]"
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidRequestError(
                f"messages[{i}].role must be a non-empty string",
                param=f"messages[{i}].role",
            )
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    parts.append(part["text"])
        elif content is not None:
            raise InvalidRequestError(
                f"messages[{i}].content must be a string, a list of parts or null",
                param=f"messages[{i}].content",
            )
    text = "\n".join(parts)
    return text, _text_tokens(text)


def _is_token_list(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def _check_inputs(value: object, name: str) -> tuple[str, int, int]:
    """(first text, token estimate, number of inputs) of a prompt/input field."""
    hint = (
        f"'{name}' must be a non-empty string, a list of strings, a list of token "
        f"ids or a list of token-id lists"
    )
    if isinstance(value, str):
        if name == "input" and not value:
            raise InvalidRequestError(hint, param=name)
        return value, _text_tokens(value), 1
    if _is_token_list(value):
        assert isinstance(value, list)
        return "", len(value), 1
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            if name == "input" and not all(value):
                raise InvalidRequestError(
                    f"'{name}' must not contain empty strings", param=name
                )
            return value[0], sum(_text_tokens(v) for v in value), len(value)
        if all(_is_token_list(v) for v in value):
            return "", sum(len(v) for v in value), len(value)
    raise InvalidRequestError(hint, param=name)


def _int_field(body: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequestError(
            f"'{name}' must be an integer >= {minimum}", param=name
        )
    return value


def classify(
    path: str, body: object, headers: Mapping[str, str], api_key: str | None = None
) -> LLMRequest:
    """Build an :class:`LLMRequest` from one HTTP request.

    Args:
        path: the route (``/v1/chat/completions``, ``/v1/completions``,
            ``/v1/embeddings``).
        body: the decoded JSON body.
        headers: request headers with lower-case names.
        api_key: the bearer token, if any.

    Raises:
        InvalidRequestError: the body is not an object, or a field the gateway reads
            is missing or malformed (``param`` names it).
    """
    kind = PATHS.get(path)
    if kind is None:
        raise InvalidRequestError(f"no inference route {path!r}", param=None)
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "'model' is required: a model name from GET /v1/models", param="model"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise InvalidRequestError("'stream' must be true or false", param="stream")
    stream = bool(stream)
    if kind == EMBEDDING and stream:
        raise InvalidRequestError("embeddings cannot be streamed", param="stream")

    priority = DEFAULT_PRIORITY
    slo_ms: float | None = None
    if "priority" in body:
        priority = parse_priority(body["priority"], "body field 'priority'")
    if "x-request-priority" in headers:
        priority = parse_priority(headers["x-request-priority"], "X-Request-Priority")
    if body.get("slo_deadline_ms") is not None:
        slo_ms = parse_deadline_ms(
            body["slo_deadline_ms"], "body field 'slo_deadline_ms'"
        )
    if "x-slo-deadline-ms" in headers:
        slo_ms = parse_deadline_ms(headers["x-slo-deadline-ms"], "X-SLO-Deadline-Ms")

    size = 1
    if kind == CHAT:
        prefix, prompt_tokens = _check_messages(body.get("messages"))
    elif kind == COMPLETION:
        if "prompt" not in body:
            raise InvalidRequestError("'prompt' is required", param="prompt")
        prefix, prompt_tokens, _ = _check_inputs(body["prompt"], "prompt")
    else:
        if "input" not in body:
            raise InvalidRequestError("'input' is required", param="input")
        prefix, prompt_tokens, size = _check_inputs(body["input"], "input")
    output = 0
    if kind != EMBEDDING:
        max_tokens = _int_field(body, "max_tokens", 1)
        max_completion = _int_field(body, "max_completion_tokens", 1)
        _int_field(body, "n", 1)
        output = max_completion or max_tokens or DEFAULT_OUTPUT_TOKENS
        if "stream_options" in body and not stream:
            body = {k: v for k, v in body.items() if k != "stream_options"}

    forwarded = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    arrival = time.monotonic()
    return LLMRequest(
        kind=kind,
        model=model,
        body=forwarded,
        stream=stream,
        priority=priority,
        slo_ms=slo_ms,
        arrival=arrival,
        deadline=arrival + slo_ms / 1000.0 if slo_ms is not None else math.inf,
        tokens=prompt_tokens + output,
        size=size,
        prefix=prefix,
        headers=headers,
        api_key=api_key,
    )
