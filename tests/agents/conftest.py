"""A test double of an OpenAI-compatible chat server with tool calling.

``ScriptedOpenAIDouble`` answers ``POST /v1/chat/completions`` from a fixed script
keyed on the conversation, so the agent loop runs against real HTTP:

* last message from the user ``"calc: EXPR"`` -> a ``calculator`` call with EXPR;
* ``"fetch: URL"`` -> an ``http-get`` call; ``"bad args"`` -> a ``calculator`` call
  with a wrong argument name; ``"loop"`` -> a ``calculator`` call every step;
  ``"slow"`` -> waits 3 s before answering;
* last message a tool result -> the answer ``"done: <tool content>"``;
* anything else -> the answer ``"plain: <text>"``.

Every request body is kept in ``requests``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def _call(name: str, args: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{n}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
        ],
    }


def scripted_reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    last = messages[-1]
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    n = len(messages)
    if "loop" in first_user:
        return _call("calculator", {"expression": f"{n} + 1"}, n)
    if last["role"] == "tool":
        return {"role": "assistant", "content": f"done: {last['content']}"}
    text = last["content"]
    if text.startswith("calc: "):
        return _call("calculator", {"expression": text[6:]}, n)
    if text.startswith("fetch: "):
        return _call("http-get", {"url": text[7:]}, n)
    if text == "bad args":
        return _call("calculator", {"expr": "1"}, n)
    if text == "slow":
        time.sleep(3)
    return {"role": "assistant", "content": f"plain: {text}"}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the agent hung up on a slow answer (its step timeout): expected


class ScriptedOpenAIDouble:
    """The server (see module doc); ``base_url`` ends in ``/v1``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.requests.append(body)
                msg = scripted_reply(body["messages"])
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "message": msg, "finish_reason": "stop"}
                        ],
                    }
                ).encode()
                self.send_response(200 if self.path == "/v1/chat/completions" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def openai_double() -> Iterator[ScriptedOpenAIDouble]:
    double = ScriptedOpenAIDouble()
    try:
        yield double
    finally:
        double.close()
