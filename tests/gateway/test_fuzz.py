"""Schemathesis fuzzing of the gateway's HTTP API against its own OpenAPI document:
whatever the input, no 5xx and no crash (engines are EngineDouble servers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from sage_core.gateway.schema import openapi_schema

schema = schemathesis.openapi.from_dict(openapi_schema())
# registering engines would make the gateway contact arbitrary fuzzed URLs
schema = schema.exclude(path="/admin/engines", method="POST").exclude(
    path_regex="^/admin/engines/"
)


@pytest.fixture(scope="module")
def fuzz_gateway(request: pytest.FixtureRequest) -> Iterator[Any]:
    from sage_tests_llm_conftest import double

    from sage_core.gateway import create_app
    from sage_core.llm.config import GatewayConfig

    engines = [
        double.EngineDouble("tiny").start(),
        double.EngineDouble("mini", "embedding").start(),
    ]
    config = GatewayConfig.from_dict(
        {
            "engines": [engines[0].spec("llm"), engines[1].spec("emb")],
            "queue_timeout_s": 10,
        }
    )
    gw = double.ServedApp(create_app(config)).start()
    try:
        yield gw
    finally:
        gw.stop()
        for engine in engines:
            engine.stop()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_input_makes_the_gateway_fail(case: Any, fuzz_gateway: Any) -> None:
    response = case.call(base_url=fuzz_gateway.url, timeout=30)
    assert response.status_code < 500 or (
        case.path == "/health" and response.status_code == 503
    ), f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400 and "json" in response.headers.get(
        "content-type", ""
    ):
        error = response.json()["error"]
        assert error["message"] and error["type"]
