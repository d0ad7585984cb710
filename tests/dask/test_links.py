"""Direct links between replica actors (``runtime/link.py``): cross-worker packets
travel over them, a peer without the replica's token is refused, and a receiver's
error comes back to the sender by name."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from distributed.comm.core import CommClosedError
from distributed.security import Security

from sage_core import LocalEnvironment
from sage_core.api.dask_environment import DaskEnvironment
from sage_core.runtime.link import LinkError, LinkPool, LinkServer


def worker_stand_in(address: str = "tcp://127.0.0.1:1", **security: Any) -> Any:
    """What ``LinkServer.start`` reads of a Dask worker: its address and security
    (a test double; real workers are used by the pipeline test below)."""
    return SimpleNamespace(address=address, security=Security(**security))


class Receiver:
    """The replica side of a link in these tests: records pushes, grants credits."""

    def __init__(self) -> None:
        self.pushed: list[tuple[str, int, bytes]] = []

    async def push(self, sender: str, seq: int, blob: bytes) -> int:
        if blob == b"boom":
            raise ValueError("the inbox refused it")
        self.pushed.append((sender, seq, blob))
        return len(blob)

    async def credit(self, sender: str) -> int:
        return 7


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_push_and_credit_over_a_link_and_errors_come_back_named() -> None:
    async def main() -> None:
        rx = Receiver()
        server = LinkServer(rx.push, rx.credit)
        address = await server.start(worker_stand_in())
        assert address is not None and address.startswith("tcp://127.0.0.1:")
        pool = LinkPool(address, server.token, {})
        try:
            # several calls in flight share the pool's comms
            got = await asyncio.gather(
                *(pool.push("a/0", i, b"x" * (i + 1)) for i in range(8))
            )
            assert got == [i + 1 for i in range(8)]
            assert sorted(rx.pushed) == [("a/0", i, b"x" * (i + 1)) for i in range(8)]
            assert await pool.credit("a/0") == 7
            with pytest.raises(LinkError, match="ValueError: the inbox refused it"):
                await pool.push("a/0", 8, b"boom")
            assert await pool.push("a/0", 9, b"ok") == 2  # the link still serves
        finally:
            pool.close()
            server.close()

    run(main())


def test_a_warmed_pool_sends_on_the_comms_it_opened_ahead() -> None:
    async def main() -> None:
        rx = Receiver()
        server = LinkServer(rx.push, rx.credit)
        address = await server.start(worker_stand_in())
        assert address is not None
        pool = LinkPool(address, server.token, {})
        try:
            await pool.warm(3)
            opened = set(pool._all)
            assert len(opened) == 3 and all(not c.closed() for c in opened)
            got = await asyncio.gather(*(pool.push("a/0", i, b"x") for i in range(3)))
            assert got == [1, 1, 1]
            assert set(pool._all) == opened  # no connect on the data path
        finally:
            pool.close()
            server.close()

    run(main())


def test_a_peer_without_the_token_is_refused() -> None:
    async def main() -> None:
        rx = Receiver()
        server = LinkServer(rx.push, rx.credit)
        address = await server.start(worker_stand_in())
        assert address is not None
        stranger = LinkPool(address, "not-the-token", {})
        try:
            with pytest.raises((CommClosedError, OSError)):
                await stranger.push("a/0", 0, b"payload")
            assert rx.pushed == []
        finally:
            stranger.close()
            server.close()

    run(main())


def test_unsupported_scheme_keeps_actor_calls() -> None:
    async def main() -> None:
        server = LinkServer(Receiver().push, Receiver().credit)
        assert await server.start(worker_stand_in("ucx://10.0.0.1:1234")) is None

    run(main())


def test_cross_worker_edges_use_links_and_results_are_unchanged(embedded: Any) -> None:
    def build(env: Any) -> None:
        s = env.from_collection(list(range(2000)), parallelism=2)
        s = s.map(lambda x: x * 2, parallelism=2).key_by(lambda x: x % 5)
        s.map(lambda x: x + 1, parallelism=2).sink("collect")

    local = LocalEnvironment("links")
    build(local)
    expected = local.execute(timeout=60)
    env = DaskEnvironment(
        "links", client=embedded, chaining=False, buffer_size=8, queue_capacity=4
    )
    build(env)
    got = env.submit().wait(timeout=120)
    assert Counter(got.collected()) == Counter(expected.collected())
    remote = [
        o
        for snap in got.metrics["replicas"].values()
        for o in snap["outlets"]
        if o["remote"]
    ]
    assert remote, "the plan had no cross-worker edge"
    assert all(o["link"] and o["calls"] > 0 for o in remote)


def test_direct_links_off_sends_by_actor_calls(embedded: Any) -> None:
    env = DaskEnvironment(
        "no-links", client=embedded, chaining=False, buffer_size=4, direct_links=False
    )
    env.from_collection(list(range(300)), parallelism=2).map(
        lambda x: -x, parallelism=2
    ).sink("collect")
    got = env.submit().wait(timeout=120)
    assert sorted(got.collected()) == sorted(-x for x in range(300))
    remote = [
        o
        for snap in got.metrics["replicas"].values()
        for o in snap["outlets"]
        if o["remote"]
    ]
    assert remote and not any(o["link"] for o in remote)


def test_direct_links_must_be_a_boolean() -> None:
    from sage_core.compiler.plan import PlanFormatError

    with pytest.raises(PlanFormatError, match="direct_links: must be true or false"):
        DaskEnvironment("bad", client=object(), direct_links="yes")
