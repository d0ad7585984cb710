"""Served pipelines over real HTTP: each request gets exactly its own answer, with
filter/flat_map semantics, per-request errors, the in-flight cap and deadlines."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import LocalEnvironment, MapFunction, PipelineServer, ServeError
from sage_core.graph.model import GraphError


class DoubleBatch(MapFunction):
    """A batching map (``map_batch``): y = 2x, echoing the request's tag."""

    def map_batch(self, items: list[Any]) -> list[Any]:
        return [{**d, "y": 2 * d["x"]} for d in items]


def fail_on_13(d: dict[str, Any]) -> dict[str, Any]:
    if d["x"] == 13:
        raise ValueError("13 is unlucky")
    return d


def _env(name: str = "calc") -> LocalEnvironment:
    env = LocalEnvironment(name)
    (
        env.from_collection([])
        .map(fail_on_13)
        .key_by("x")
        .map(DoubleBatch, parallelism=2)
        .filter(lambda d: d["x"] >= 0)
        .sink("collect")
    )
    return env


@pytest.fixture(scope="module")
def calc_url():
    with PipelineServer(_env()).serve_in_thread() as url:
        yield url


async def _post_all(url: str, bodies: list[Any], **kw: Any) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return list(
            await asyncio.gather(
                *(client.post("/v1/pipelines/calc", json=b, **kw) for b in bodies)
            )
        )


@settings(max_examples=15)
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=40))
def test_every_concurrent_request_gets_exactly_its_own_answer(calc_url, xs):
    xs = [x for x in xs if x != 13]
    bodies = [{"x": x, "tag": i} for i, x in enumerate(xs)]
    responses = asyncio.run(_post_all(calc_url, bodies))
    for body, r in zip(bodies, responses, strict=True):
        assert r.status_code == 200, r.text
        assert r.json() == {**body, "y": 2 * body["x"]}


def test_filtered_request_gets_204_and_batch_marks_it_null(calc_url):
    (r,) = asyncio.run(_post_all(calc_url, [{"x": -5}]))
    assert r.status_code == 204
    r = httpx.post(
        f"{calc_url}/v1/pipelines/calc", json={"inputs": [{"x": 1}, {"x": -1}]}
    )
    assert r.status_code == 200
    assert r.json() == {"outputs": [{"x": 1, "y": 2}, None]}


def test_one_requests_error_leaves_the_others_alone(calc_url):
    bodies = [{"x": x} for x in (1, 13, 2, 3)]
    responses = asyncio.run(_post_all(calc_url, bodies))
    assert [r.status_code for r in responses] == [200, 500, 200, 200]
    err = responses[1].json()["error"]
    assert err["code"] == "operator_error" and "13 is unlucky" in err["message"]
    assert "fail_on_13" in err["message"]
    r = httpx.post(
        f"{calc_url}/v1/pipelines/calc", json={"inputs": [{"x": 13}, {"x": 4}]}
    )
    first, second = r.json()["outputs"]
    assert first["error"]["code"] == "operator_error"
    assert second == {"x": 4, "y": 8}
    assert httpx.get(f"{calc_url}/health").json()["status"] == "ok"


def test_bad_requests_are_openai_shaped(calc_url):
    r = httpx.post(f"{calc_url}/v1/pipelines/calc", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{calc_url}/v1/pipelines/other", json={"x": 1})
    assert r.status_code == 404 and "calc" in r.json()["error"]["message"]
    r = httpx.post(f"{calc_url}/v1/pipelines/calc", json={"inputs": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "inputs"
    r = httpx.post(
        f"{calc_url}/v1/pipelines/calc",
        json={"x": 1},
        headers={"X-SLO-Deadline-Ms": "soon"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-SLO-Deadline-Ms"


def test_flat_map_answers_are_lists_in_order():
    env = LocalEnvironment("words")
    env.from_collection([]).flat_map(str.split).map(str.upper).sink("collect")
    with PipelineServer(env).serve_in_thread() as url:
        r = httpx.post(f"{url}/v1/pipelines/words", json="to be or not")
        assert r.json() == ["TO", "BE", "OR", "NOT"]
        assert httpx.post(f"{url}/v1/pipelines/words", json="").status_code == 204


class Gate:
    """A map that holds every item until the test opens the gate."""

    opened = threading.Event()

    def __call__(self, item: Any) -> Any:
        Gate.opened.wait(30)
        return item


@pytest.fixture
def gated_url():
    Gate.opened.clear()
    env = LocalEnvironment("gated")
    env.from_collection([]).map(Gate()).sink("collect")
    server = PipelineServer(env, max_in_flight=2)
    with server.serve_in_thread() as url:
        yield url, server
        Gate.opened.set()


def test_over_the_cap_requests_get_429_with_retry_after(gated_url):
    url, server = gated_url

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            held = [
                asyncio.create_task(client.post("/v1/pipelines/gated", json=i))
                for i in range(2)
            ]
            while server.hub.in_flight < 2:
                await asyncio.sleep(0.01)
            refused = await client.post("/v1/pipelines/gated", json=99)
            Gate.opened.set()
            return list(await asyncio.gather(*held)), refused

    held, refused = asyncio.run(scenario())
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert sorted(r.json() for r in held) == [0, 1]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'outcome="refused"} 1' in metrics and 'outcome="ok"} 2' in metrics


def test_deadline_answers_504_and_the_pipeline_goes_on(gated_url):
    url, server = gated_url
    r = httpx.post(
        f"{url}/v1/pipelines/gated", json=1, headers={"X-SLO-Deadline-Ms": "50"}
    )
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
    assert server.hub.in_flight == 0  # no one waits: the request was dropped
    Gate.opened.set()
    assert httpx.post(f"{url}/v1/pipelines/gated", json=2).json() == 2


def test_pipelines_that_mix_requests_are_refused():
    env = LocalEnvironment("joined")
    a = env.from_collection([])
    b = env.from_collection([])
    a.connect(b).co_map((lambda x: x), (lambda x: x)).sink("collect")
    with pytest.raises(ServeError, match="one source"):
        PipelineServer(env).start()


def test_an_invalid_pipeline_is_refused_before_serving():
    env = LocalEnvironment("broken")
    env.from_collection([]).map("embed", backend="no-such-backend").sink("collect")
    with pytest.raises(GraphError, match="no-such-backend"):
        PipelineServer(env).start()


class FailsToOpen(MapFunction):
    def open(self, context: Any) -> None:
        raise RuntimeError("model file missing")


def test_a_pipeline_that_dies_reports_unavailable():
    env = LocalEnvironment("broken")
    env.from_collection([]).map(FailsToOpen).sink("collect")
    server = PipelineServer(env)
    with server.serve_in_thread() as url:
        for _ in range(500):
            if server.failure:
                break
            threading.Event().wait(0.01)
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        assert "model file missing" in r.json()["error"]
        r = httpx.post(f"{url}/v1/pipelines/broken", json={"text": "x"})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "pipeline_unavailable"
