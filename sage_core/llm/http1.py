"""A lean HTTP/1.1 keep-alive client for the gateway's hot path to engines.

Why not httpx here: its connection pool re-scans every pooled connection (with a
readability poll each) several times per request, which at a few dozen concurrent
requests costs more CPU than everything else the gateway does (measured by
``bench/gateway_bench.py``). This client keeps one LIFO stack of idle connections per
engine address and parses just what OpenAI-compatible engines send: a status line,
headers, and a body framed by Content-Length, chunked encoding, or connection close.

A response must be read to the end (or closed) before its connection goes back to the
pool; a connection whose response was abandoned (client gone, error) is closed, which
is how an engine learns that it can stop generating.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024


def parse_fields(lines: Iterable[str]) -> dict[str, str]:
    """``Name: value`` header (or trailer) lines as a dict with lower-case names;
    lines without a colon are skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


class HTTPError(Exception):
    """Transport failure; ``connect`` is True when no connection could be opened."""

    def __init__(self, message: str, *, connect: bool = False) -> None:
        super().__init__(message)
        self.connect = connect


class _Stale(Exception):
    """A pooled connection turned out closed before the request reached the engine."""


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


class Response:
    """Status, headers (lower-case names) and the body, read once; a chunked body's
    trailer fields are in ``trailers`` once it has been read to the end."""

    def __init__(
        self,
        pool: Pool,
        conn: _Conn,
        status: int,
        headers: dict[str, str],
        timeout: float,
    ) -> None:
        self.pool = pool
        self.conn: _Conn | None = conn
        self.status_code = status
        self.headers = headers
        self.trailers: dict[str, str] = {}
        self.timeout = timeout
        self.keep_alive = headers.get("connection", "").lower() != "close"

    async def _read(self, coro: object) -> bytes:
        return await asyncio.wait_for(coro, self.timeout)  # type: ignore[arg-type]

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunk framing removed)."""
        conn = self.conn
        if conn is None:
            return
        reader = conn.reader
        try:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    line = await self._read(reader.readuntil(b"\r\n"))
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        self.trailers = await self._read_trailers(reader)
                        break
                    data = await self._read(reader.readexactly(size + 2))
                    yield data[:-2]
            elif "content-length" in self.headers:
                left = int(self.headers["content-length"])
                while left:
                    data = await self._read(reader.read(min(left, 65536)))
                    if not data:
                        raise HTTPError("the engine closed the connection mid-body")
                    left -= len(data)
                    yield data
            else:
                self.keep_alive = False
                while data := await self._read(reader.read(65536)):
                    yield data
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
            self.aclose_now()
            raise HTTPError(f"reading the engine's answer failed: {exc!r}") from exc
        except BaseException:
            self.aclose_now()
            raise
        self._release()

    async def _read_trailers(self, reader: asyncio.StreamReader) -> dict[str, str]:
        """The trailer fields after a chunked body's last chunk, up to the blank
        line that ends the message."""
        lines = []
        while (line := await self._read(reader.readuntil(b"\r\n"))) != b"\r\n":
            lines.append(line.decode("latin-1"))
        return parse_fields(lines)

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])

    def _release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            if self.keep_alive and conn.usable():
                self.pool.put(conn)
            else:
                conn.close()

    def aclose_now(self) -> None:
        """Drop the connection (the engine sees the client go away)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        self.aclose_now()


class Pool:
    """Idle keep-alive connections to one ``scheme://host:port``.

    Args:
        url: base URL of the engine.
        max_idle: idle connections kept at most.
        connect_timeout_s: bound on opening a connection.
    """

    def __init__(
        self, url: str, *, max_idle: int = 256, connect_timeout_s: float = 2.0
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.base_path = parts.path.rstrip("/")
        self.host_header = parts.netloc
        self.max_idle = max_idle
        self.connect_timeout_s = connect_timeout_s
        self.idle: list[_Conn] = []

    def put(self, conn: _Conn) -> None:
        if len(self.idle) < self.max_idle:
            self.idle.append(conn)
        else:
            conn.close()

    async def _connect(self) -> _Conn:
        context = ssl.create_default_context() if self.tls else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=context, limit=MAX_HEAD
                ),
                self.connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            raise HTTPError(
                f"cannot connect to {self.host}:{self.port}: {exc!r}", connect=True
            ) from exc
        return _Conn(reader, writer)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        *,
        timeout_s: float,
    ) -> Response:
        """Send a request and read the status line and headers.

        A pooled connection that turns out to be closed by the engine is retried once
        on a fresh connection (nothing was processed on it).

        Raises:
            HTTPError: connecting, sending or reading the head failed.
        """
        head = [
            f"{method} {self.base_path}{path} HTTP/1.1",
            f"Host: {self.host_header}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        try:
            return await self._exchange(payload, timeout_s, fresh=False)
        except _Stale:  # a keep-alive connection the engine had closed: nothing ran
            return await self._exchange(payload, timeout_s, fresh=True)

    async def _exchange(
        self, payload: bytes, timeout_s: float, *, fresh: bool
    ) -> Response:
        conn = None
        while self.idle and not fresh:
            candidate = self.idle.pop()
            if candidate.usable():
                conn = candidate
                break
            candidate.close()
        reused = conn is not None
        if conn is None:
            conn = await self._connect()
        try:
            conn.writer.write(payload)
            raw = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), timeout_s)
        except (OSError, asyncio.IncompleteReadError) as exc:
            conn.close()
            if reused:
                raise _Stale from exc
            raise HTTPError(f"the engine dropped the connection: {exc!r}") from exc
        except (TimeoutError, asyncio.LimitOverrunError) as exc:
            conn.close()
            raise HTTPError(f"no answer head from the engine: {exc!r}") from exc
        except BaseException:
            conn.close()
            raise
        return self._parse(conn, raw, timeout_s)

    def _parse(self, conn: _Conn, raw: bytes, timeout_s: float) -> Response:
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            conn.close()
            raise HTTPError(
                f"malformed status line from the engine: {lines[0]!r}"
            ) from None
        return Response(self, conn, status, parse_fields(lines[1:]), timeout_s)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
