"""Errors of the control plane, each mapped to an HTTP status and OpenAI's error shape.

The gateway turns every :class:`GatewayError` into
``{"error": {"message", "type", "param", "code"}}`` with :attr:`GatewayError.status`;
library users (``UnifiedInferenceClient``, the control plane in-process) catch them by
class.
"""

from __future__ import annotations

from typing import Any

from sage_core.common.errors import SageError


class GatewayError(SageError):
    """Base of every control-plane error that has an HTTP meaning."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_response(exc: GatewayError) -> Any:
    """The HTTP (Starlette) response of ``exc``: its status, OpenAI-shaped body and
    headers (``Retry-After`` ...); the gateway and served pipelines answer with it."""
    from starlette.responses import JSONResponse

    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


class InvalidRequestError(GatewayError):
    """Malformed JSON or an invalid field (400); ``param`` names the field."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class AuthenticationError(GatewayError):
    """API keys are configured and the request carried none or a wrong one (401)."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFoundError(GatewayError):
    """A route or an object (engine) that does not exist (404)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    """No registered engine serves the requested model (404)."""

    code = "model_not_found"

    def __init__(
        self,
        model: str | None = None,
        available: list[str] | None = None,
        *,
        message: str | None = None,
    ) -> None:
        listing = ", ".join(sorted(available or [])) or "none registered"
        super().__init__(
            message
            or f"the model {model!r} does not exist on this gateway; available: "
            f"{listing} (see GET /v1/models)",
            param="model",
        )
        self.model = model


class PayloadTooLargeError(GatewayError):
    """The request body is larger than ``max_body_bytes`` (413)."""

    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class OverloadedError(GatewayError):
    """The class queue is full or a rate limit was hit (429, with Retry-After)."""

    status = 429
    type = "rate_limit_error"
    code = "overloaded"

    def __init__(
        self, message: str, *, retry_after_s: int, code: str | None = None
    ) -> None:
        super().__init__(
            message, code=code, headers={"Retry-After": str(int(retry_after_s))}
        )
        self.retry_after_s = int(retry_after_s)


class NoHealthyEngineError(GatewayError):
    """Every engine serving the model is down, draining or tripped (503)."""

    status = 503
    type = "server_error"
    code = "no_healthy_engine"


class UpstreamError(GatewayError):
    """Every engine tried failed before the first byte, or failed mid-stream (502)."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class EngineRejectedError(GatewayError):
    """The engine answered a 4xx: its status and message are passed to the caller."""

    type = "invalid_request_error"
    code = "engine_rejected"

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.status = status


class ConfigError(SageError):
    """A gateway or engine configuration is invalid; the message names the field."""


class QueueTimeoutError(GatewayError):
    """A request waited in the queue longer than ``queue_timeout_s`` (503)."""

    status = 503
    type = "server_error"
    code = "queue_timeout"
