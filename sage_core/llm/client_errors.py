"""Named errors of inference endpoints, and the mapping from HTTP answers to them.

Every error names the endpoint (URL) and the model, so a pipeline failing on one of
many engines says which one and what to do. :func:`error_from_response` is the one
place that turns a status code and an OpenAI/vLLM-shaped error body into a class.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from sage_core.common.errors import SageError


class InferenceError(SageError):
    """A call to an inference endpoint failed.

    Attributes:
        endpoint: the URL that was called.
        model: the model asked for (None when the call named none).
        status: the HTTP status, when the server answered.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        model: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.model = model
        self.status = status


class EndpointUnreachableError(InferenceError):
    """No connection could be made (refused, reset, DNS, connect timeout)."""


class EndpointTimeoutError(InferenceError):
    """Connected, but the server sent nothing within the read timeout."""


class UnknownModelError(InferenceError):
    """The server does not serve the requested model (404)."""


class ContextTooLongError(InferenceError):
    """Prompt plus ``max_tokens`` exceed the model's context length (400)."""


class AuthenticationFailedError(InferenceError):
    """Missing or wrong API key (401/403)."""


class BadRequestError(InferenceError):
    """The server rejected the request as invalid (other 4xx)."""


class RateLimitedError(InferenceError):
    """429 after every retry; ``retry_after_s`` is what the server asked for."""

    retry_after_s: float | None = None


class ServerError(InferenceError):
    """5xx after every retry."""


class StreamError(InferenceError):
    """A malformed answer, an error event mid-stream, or a stream cut short."""


_CONTEXT_PATTERNS = re.compile(
    r"context length|context window|maximum context|max_model_len|too long|"
    r"context_length_exceeded|exceeds the model|maximum model length",
    re.IGNORECASE,
)
_MODEL_PATTERNS = re.compile(r"model", re.IGNORECASE)


def parse_error_body(body: Any) -> tuple[str, str | None, str | None]:
    """``(message, type, code)`` from an error body in any common shape.

    Understands OpenAI's ``{"error": {"message", "type", "code"}}``, vLLM's flat
    ``{"object": "error", "message", "type", "code"}``, a JSON string, or plain text.
    """
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        text = body.strip()
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            return text[:500] or "(empty body)", None, None
    if not isinstance(body, Mapping):
        return str(body)[:500], None, None
    error = body.get("error", body)
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, Mapping):
        return str(body)[:500], None, None
    message = error.get("message") or error.get("detail") or json.dumps(body)[:500]
    code = error.get("code")
    kind = error.get("type")
    return (
        str(message),
        None if kind is None else str(kind),
        None if code is None else str(code),
    )


def error_from_response(
    status: int,
    body: Any,
    *,
    endpoint: str,
    model: str | None,
    retry_after: str | None = None,
    attempts: int = 1,
) -> InferenceError:
    """The named error for an HTTP error answer (``status >= 400``).

    Args:
        status: the HTTP status code.
        body: the raw or parsed response body.
        endpoint: the URL that was called (named in the message).
        model: the model that was asked for (named in the message).
        retry_after: the ``Retry-After`` header, if any.
        attempts: how many attempts were made (named in the message for 429/5xx).
    """
    message, kind, code = parse_error_body(body)
    where = f"{endpoint} (model {model!r})" if model else endpoint
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    lowered = f"{message} {kind or ''} {code or ''}"
    cls: type[InferenceError]
    if status == 404 and (
        code == "model_not_found" or (model and _MODEL_PATTERNS.search(lowered))
    ):
        cls = UnknownModelError
        text = (
            f"{where} does not serve model {model!r}: {message}. "
            f"List the served models with GET {endpoint.rsplit('/v1', 1)[0]}/v1/models"
        )
    elif status in (400, 413, 422) and _CONTEXT_PATTERNS.search(lowered):
        cls = ContextTooLongError
        text = (
            f"{where} rejected the request as longer than the model's context: "
            f"{message}. Shorten the prompt or lower max_tokens"
        )
    elif status in (401, 403):
        cls = AuthenticationFailedError
        text = f"{where} refused the credentials (HTTP {status}): {message}"
    elif status == 429:
        cls = RateLimitedError
        text = f"{where} is rate limiting (HTTP 429{tried}): {message}"
    elif status >= 500:
        cls = ServerError
        text = f"{where} failed with HTTP {status}{tried}: {message}"
    elif status == 404:
        cls = BadRequestError
        text = (
            f"{endpoint} does not exist (HTTP 404): {message}. Check that the base "
            f"URL is the API root, usually ending in /v1"
        )
    else:
        cls = BadRequestError
        text = f"{where} rejected the request (HTTP {status}): {message}"
    error = cls(text, endpoint=endpoint, model=model, status=status)
    if isinstance(error, RateLimitedError) and retry_after:
        try:
            error.retry_after_s = float(retry_after)
        except ValueError:
            error.retry_after_s = None
    return error
