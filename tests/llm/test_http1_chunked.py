"""The gateway's HTTP/1.1 client reads a chunked body with trailer fields to the end:
the body is whole, the trailers are kept, and the connection is reused."""

from __future__ import annotations

import asyncio
import contextlib

from sage_core.llm.http1 import Pool, parse_fields

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n"
    b"X-Tokens: 2\r\nServer-Timing: gen;dur=12\r\n\r\n"
)


async def _exchange_twice() -> tuple[list[bytes], dict[str, str], int]:
    accepted = 0
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writers.append(writer)
        # IncompleteReadError: the client closed the connection
        with contextlib.suppress(asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(CHUNKED)
                await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(f"http://127.0.0.1:{port}")
    bodies = []
    try:
        for _ in range(2):
            resp = await pool.request("GET", "/", b"", {}, timeout_s=5)
            bodies.append(await resp.aread())
    finally:
        pool.close()
        server.close()
        for w in writers:
            w.close()
            await w.wait_closed()
        await server.wait_closed()
    return bodies, resp.trailers, accepted


def test_a_chunked_body_keeps_its_trailers_and_its_connection() -> None:
    bodies, trailers, accepted = asyncio.run(_exchange_twice())
    assert bodies == [b"hello world", b"hello world"]
    assert trailers == {"x-tokens": "2", "server-timing": "gen;dur=12"}
    assert accepted == 1  # the second request reused the first connection


def test_fields_without_a_colon_are_skipped() -> None:
    assert parse_fields(["A: 1", "junk", " B :two ", ""]) == {"a": "1", "b": "two"}
