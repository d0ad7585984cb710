"""The SAGE dashboard routes on a bare tornado server (no Dask cluster needed)."""

from __future__ import annotations

import asyncio

import tornado.httpclient
import tornado.httpserver
import tornado.testing
import tornado.web

from sage_core.observe.dashboard import ROUTES


async def _fetch(path: str) -> tornado.httpclient.HTTPResponse:
    app = tornado.web.Application([(p, h, {"dask_server": None}) for p, h in ROUTES])
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    client = tornado.httpclient.AsyncHTTPClient()
    try:
        return await client.fetch(f"http://127.0.0.1:{port}{path}", raise_error=False)
    finally:
        server.stop()
        await server.close_all_connections()


def test_sage_page_with_trailing_slash_lands_on_the_page() -> None:
    response = asyncio.run(_fetch("/sage/"))
    assert response.code == 200
    assert response.effective_url.endswith("/sage")
    assert b"<title>SAGE jobs</title>" in response.body


def test_sage_page_without_slash_is_served_directly() -> None:
    response = asyncio.run(_fetch("/sage"))
    assert response.code == 200
    assert response.effective_url.endswith("/sage")
