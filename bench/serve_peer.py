"""The hand-written peer of bench-serve: an asyncio (Starlette) service running the
RAG pipeline's operators itself — the same operator objects and backends as
``sage serve examples/pipelines/rag.yaml``, built from the same spec — with its own
micro-batcher (the spec's ``embed`` batch size and wait) and one worker thread, as
the served pipeline has one replica per operator.

Run: ``python bench/serve_peer.py SPEC --port P`` (answers ``POST
/v1/pipelines/NAME`` and ``GET /health``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sage_core.functions import MapFunction, OperatorContext
from sage_core.graph import load_spec
from sage_core.plugins import resolve


def build_chain(spec: Path) -> tuple[str, list[MapFunction], int, float]:
    """The spec's map operators, opened, in order; the batch size and wait (s)."""
    loaded = load_spec(spec)
    graph = loaded.graph
    chain: list[MapFunction] = []
    batch, wait = 1, 0.0
    for name in graph.topological():
        node = graph.nodes[name]
        if node.role != "map":
            continue
        fn = resolve("operator", node.ref.name).obj(**node.config)
        fn.open(OperatorContext(name, config=node.config))
        chain.append(fn)
        batch = max(batch, int(node.config.get("batch_size", 1)))
        wait = max(wait, float(node.config.get("max_wait_ms", 0)) / 1000)
    return graph.name, chain, batch, wait


class Batcher:
    """Collects requests into batches (up to ``size``, waiting ``wait`` s after the
    first) and runs the chain on one worker thread."""

    def __init__(self, chain: list[MapFunction], size: int, wait: float) -> None:
        self.chain, self.size, self.wait = chain, size, wait
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1)

    def run_chain(self, items: list[Any]) -> list[Any]:
        for fn in self.chain:
            items = fn.map_batch(items)
        return items

    async def loop(self) -> None:
        running = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = running.time() + self.wait
            while len(batch) < self.size:
                left = deadline - running.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            items = [item for item, _ in batch]
            try:
                outs = await running.run_in_executor(self.pool, self.run_chain, items)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets it
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            for (_, fut), out in zip(batch, outs, strict=True):
                fut.set_result(out)


def make_app(spec: Path) -> Starlette:
    name, chain, size, wait = build_chain(spec)
    batcher = Batcher(chain, size, wait)

    async def pipeline(request: Request) -> Response:
        if request.path_params["name"] != name:
            return JSONResponse({"error": {"message": "unknown pipeline"}}, 404)
        fut = asyncio.get_running_loop().create_future()
        await batcher.queue.put((json.loads(await request.body()), fut))
        return JSONResponse(await fut)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(batcher.loop())
        yield
        task.cancel()

    return Starlette(
        routes=[
            Route("/v1/pipelines/{name}", pipeline, methods=["POST"]),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.spec), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
