"""Serving a pipeline whose replicas run on a Dask cluster: the requests and answers
cross to the worker processes through the serving process's hub server, which only
talks to connections that know its key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sage_core import PipelineServer
from sage_core.api.dask_environment import DaskEnvironment
from sage_core.serve.hub import RequestHub, hub_for
from sage_core.serve.remote import HubServer, HubUnreachable, parse_locator


def triple_or_fail(d: dict[str, Any]) -> dict[str, Any]:
    if d["x"] == 13:
        raise ValueError("13 is unlucky")
    return {**d, "y": 3 * d["x"], "pid": __import__("os").getpid()}


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    import sys

    import cloudpickle
    from distributed import Client, LocalCluster

    # worker processes: the operators reach the hub over its server, not in-process
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = Client(cluster)
    client.wait_for_workers(2)
    env = DaskEnvironment("calc", client=client)
    try:
        (
            env.from_collection([])
            .map(triple_or_fail, parallelism=2)
            .filter(lambda d: d["x"] >= 0)
            .sink("collect")
        )
        with PipelineServer(env).serve_in_thread() as url:
            yield url
    finally:
        client.close()
        cluster.close()


async def _post_all(url: str, bodies: list[Any]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return list(
            await asyncio.gather(
                *(client.post("/v1/pipelines/calc", json=b) for b in bodies)
            )
        )


def test_requests_are_answered_by_replicas_on_the_workers(cluster_url: str) -> None:
    import os

    bodies = [{"x": x, "tag": i} for i, x in enumerate([0, 5, 13, -2, 40] * 8)]
    responses = asyncio.run(_post_all(cluster_url, bodies))
    pids = set()
    for body, r in zip(bodies, responses, strict=True):
        if body["x"] == 13:
            assert r.status_code == 500
            assert "13 is unlucky" in r.json()["error"]["message"]
        elif body["x"] < 0:
            assert r.status_code == 204
        else:
            assert r.status_code == 200, r.text
            out = r.json()
            assert (out["x"], out["tag"], out["y"]) == (
                body["x"],
                body["tag"],
                3 * body["x"],
            )
            pids.add(out["pid"])
    assert os.getpid() not in pids  # the map ran in the worker processes


def test_a_batch_request_keeps_its_order(cluster_url: str) -> None:
    inputs = [{"x": x} for x in (3, -1, 2, 1)]
    r = httpx.post(
        f"{cluster_url}/v1/pipelines/calc", json={"inputs": inputs}, timeout=60
    )
    assert r.status_code == 200
    got = r.json()["outputs"]
    assert [o and o["y"] for o in got] == [9, None, 6, 3]


def test_the_hub_server_refuses_a_caller_without_its_key() -> None:
    hub = RequestHub("guarded").register()
    server = HubServer(hub, "127.0.0.1")
    try:
        hub_id, (host, port, key) = parse_locator(server.locator)
        assert hub_id == hub.id
        with pytest.raises(HubUnreachable):
            hub_for(f"other@{host}:{port}/{'0' * len(key)}")
        import socket

        with socket.create_connection((host, port)) as raw:  # junk, no key
            raw.sendall(b"\x00\x00\x00\x05hello" * 10)
        silent = socket.create_connection((host, port))  # never answers
        remote = hub_for(f"{hub.id}-elsewhere@{host}:{port}/{key.decode()}")
        assert remote.take(0.01) is None and not remote.closed
        hub.close()
        assert remote.take(0.01) is None and remote.closed
        silent.close()
    finally:
        server.close()
        hub.unregister()


@pytest.mark.parametrize(
    "bad", ["id@host/key", "id@host:port/key", "id@:80/key", "id@host:80/"]
)
def test_malformed_hub_locators_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match="hub locator"):
        parse_locator(bad)
