"""A trivial OpenAI-compatible engine for gateway overhead benchmarks.

It answers every chat/completion/embedding request at once with a fixed body, so what a
benchmark measures on top of it is the cost of whatever sits in front (the gateway).
Run: ``python bench/trivial_engine.py --port 9000 --model trivial``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

_HEADERS = [(b"content-type", b"application/json")]


def make_app(model: str) -> Any:
    chat = json.dumps(
        {
            "id": "cmpl-trivial",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()
    models = json.dumps({"object": "list", "data": [{"id": model}]}).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:  # read (and ignore) the body
            message = await receive()
            more = message.get("more_body", False)
        path = scope["path"]
        body = models if path == "/v1/models" else b"{}" if path == "/health" else chat
        headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="trivial")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.model),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
