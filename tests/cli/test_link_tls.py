"""A replica link on a ``tls://`` worker uses the worker's certificates: a peer with
them gets through, a peer without any certificate is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from distributed.security import Security

from sage_core.runtime.link import LinkPool, LinkServer


def test_links_on_tls_workers_need_the_certificates(
    tmp_path: Path, tls_maker: Callable[[Path], tuple[str, str, str]]
) -> None:
    ca, cert, key = tls_maker(tmp_path / "tls")
    security = Security(
        tls_ca_file=ca,
        tls_worker_cert=cert,
        tls_worker_key=key,
        require_encryption=True,
    )
    # a test double of the worker: only its address and security are read
    worker = SimpleNamespace(address="tls://127.0.0.1:1", security=security)
    pushed: list[bytes] = []

    async def push(sender: str, seq: int, blob: bytes) -> int:
        pushed.append(blob)
        return 1

    async def credit(sender: str) -> int:
        return 0

    async def main() -> None:
        server = LinkServer(push, credit)
        address = await server.start(worker)
        assert address is not None and address.startswith("tls://")
        good = LinkPool(address, server.token, security.get_connection_args("worker"))
        bare = LinkPool(address.replace("tls://", "tcp://"), server.token, {})
        try:
            assert await good.push("a/0", 0, b"hello") == 1
            with pytest.raises(Exception):  # noqa: B017 - any refusal will do
                await asyncio.wait_for(bare.push("a/0", 1, b"sneak"), 10)
            assert pushed == [b"hello"]
        finally:
            good.close()
            bare.close()
            server.close()

    asyncio.run(main())
