"""The gateway's OpenAPI 3.0 document (``GET /openapi.json``).

Request bodies describe what the gateway itself validates; engines may accept more
OpenAI parameters, which pass through unchanged.
"""

from __future__ import annotations

from typing import Any

_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed JSON or an invalid field",
        401: "Missing or wrong API key (when keys are configured)",
        403: "Admin route without an admin key, or an engine host not allowed",
        404: "Unknown model, engine or route",
        409: "The engine id exists",
        413: "The body is over max_body_bytes",
        429: "Queue full or rate limit hit; see Retry-After",
        502: "Every engine tried failed",
        503: "No healthy engine serves the model",
    }
    return {
        str(code): {
            "description": text[code],
            "content": {"application/json": {"schema": _ERROR_REF}},
        }
        for code in codes
    }


_INFER_ERRORS = (400, 401, 404, 413, 429, 502, 503)
_PRIORITY = {
    "oneOf": [
        {"type": "integer", "minimum": 0, "maximum": 9},
        {"type": "string", "enum": ["low", "normal", "high", "critical"]},
    ]
}
_SCHED_HEADERS = [
    {
        "name": "X-Request-Priority",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^([0-9]|low|normal|high|critical)$"},
        "description": "0 (low) .. 9, or low/normal/high/critical",
    },
    {
        "name": "X-SLO-Deadline-Ms",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9]{1,7}$"},
        "description": "latency objective in milliseconds",
    },
]


def _json_body(ref: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": ref}}},
    }


def _ok(ref_or_schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ref_or_schema}},
    }


def _infer(summary: str, request: str, stream: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "The engine's answer"}
    ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    if stream:
        ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "parameters": _SCHED_HEADERS,
            "requestBody": _json_body(f"#/components/schemas/{request}"),
            "responses": {"200": ok, **_errors(*_INFER_ERRORS)},
        }
    }


_COMMON_GEN = {
    "model": {"type": "string", "minLength": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "stream": {"type": "boolean"},
    "priority": _PRIORITY,
    "slo_deadline_ms": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string", "nullable": True},
                },
            }
        },
    },
    "ChatMessage": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"type": "string", "enum": ["system", "user", "assistant"]},
            "content": {"type": "string"},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            **_COMMON_GEN,
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/ChatMessage"},
            },
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            **_COMMON_GEN,
            "prompt": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "minItems": 1, "items": {"type": "string"}},
                ]
            },
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "minLength": 1},
                    },
                ]
            },
            "encoding_format": {"type": "string", "enum": ["float"]},
            "priority": _PRIORITY,
            "slo_deadline_ms": {
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": True,
            },
        },
    },
    "PolicyChange": {
        "type": "object",
        "required": ["policy"],
        "properties": {
            "policy": {"type": "string"},
            "config": {"type": "object"},
        },
    },
    "EngineSpec": {
        "type": "object",
        "required": ["url"],
        "properties": {
            "id": {"type": "string"},
            "url": {"type": "string", "pattern": "^https?://"},
            "kind": {"type": "string", "enum": ["llm", "embedding"]},
            "model": {"type": "string"},
            "models": {"type": "array", "items": {"type": "string"}},
            "max_inflight": {"type": "integer", "minimum": 1},
        },
    },
}


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI 3.0 document of every gateway route."""
    obj = {"type": "object"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "SAGE gateway", "version": "1"},
        "paths": {
            "/v1/chat/completions": _infer(
                "Chat completion (stream or not)", "ChatCompletionRequest", True
            ),
            "/v1/completions": _infer(
                "Text completion (stream or not)", "CompletionRequest", True
            ),
            "/v1/embeddings": _infer("Embeddings", "EmbeddingRequest", False),
            "/v1/models": {
                "get": {
                    "summary": "LLM and embedding models",
                    "responses": {"200": _ok(obj), **_errors(401)},
                }
            },
            "/health": {
                "get": {
                    "summary": "ok, degraded (some engine down) or unavailable",
                    "responses": {
                        "200": _ok(obj, "Every model has a healthy engine"),
                        "503": _ok(obj, "Some model has no healthy engine"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (sage_llm_*)",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/admin/metrics": {
                "get": {
                    "summary": "Gateway metrics as JSON",
                    "responses": {"200": _ok(obj), **_errors(401, 403)},
                }
            },
            "/admin/policy": {
                "get": {
                    "summary": "The active request policy",
                    "responses": {"200": _ok(obj), **_errors(401, 403)},
                },
                "put": {
                    "summary": "Switch the request policy",
                    "requestBody": _json_body("#/components/schemas/PolicyChange"),
                    "responses": {"200": _ok(obj), **_errors(400, 401, 403, 413)},
                },
            },
            "/admin/set_policy": {
                "post": {
                    "summary": "Switch the request policy (same as PUT /admin/policy)",
                    "requestBody": _json_body("#/components/schemas/PolicyChange"),
                    "responses": {"200": _ok(obj), **_errors(400, 401, 403, 413)},
                }
            },
            "/admin/engines": {
                "get": {
                    "summary": "Registered engines and their state",
                    "responses": {"200": _ok(obj), **_errors(401, 403)},
                },
                "post": {
                    "summary": "Register an engine",
                    "requestBody": _json_body("#/components/schemas/EngineSpec"),
                    "responses": {
                        "201": _ok(obj, "Registered"),
                        **_errors(400, 401, 403, 409, 413),
                    },
                },
            },
            "/admin/engines/{engine_id}": {
                "delete": {
                    "summary": "Drain and remove an engine",
                    "parameters": [
                        {
                            "name": "engine_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "drain",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "boolean"},
                        },
                    ],
                    "responses": {"200": _ok(obj), **_errors(401, 403, 404)},
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }
