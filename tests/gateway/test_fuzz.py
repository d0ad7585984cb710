"""Schemathesis fuzzing of the gateway's HTTP API against its own OpenAPI document,
admin routes included: whatever the input, no 5xx and no crash (engines are
EngineDouble servers). The gateway has inference and admin keys; each case sends
the key its route takes, so authentication never hides the handlers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from sage_core.gateway.schema import openapi_schema

schema = schemathesis.openapi.from_dict(openapi_schema())
API_KEY, ADMIN_KEY = "fuzz-inference-key", "fuzz-admin-key"
# engine ids no fuzzed DELETE can guess
LLM_ID, EMBEDDING_ID = "fuzz-llm-9f2c41", "fuzz-embedding-7d03be"
SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}


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
            "engines": [engines[0].spec(LLM_ID), engines[1].spec(EMBEDDING_ID)],
            "queue_timeout_s": 10,
            "api_keys": [API_KEY],
            "admin_keys": [ADMIN_KEY],
        }
    )
    gw = double.ServedApp(create_app(config)).start()
    try:
        yield gw
    finally:
        gw.stop()
        for engine in engines:
            engine.stop()


def _check(case: Any, gateway: Any) -> None:
    key = ADMIN_KEY if case.path.startswith("/admin/") else API_KEY
    response = case.call(
        base_url=gateway.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )
    where = f"{case.method} {case.path} -> {response.status_code}"
    assert response.status_code < 500 or (
        case.path == "/health" and response.status_code == 503
    ), f"{where}: {response.text[:300]}"
    assert response.status_code != 401, f"{where}: the right key was refused"
    if response.status_code >= 400 and "json" in response.headers.get(
        "content-type", ""
    ):
        error = response.json()["error"]
        assert error["message"] and error["type"]
    if response.status_code == 403:  # only the engine-host allow list refuses
        assert (case.method, case.path) == ("POST", "/admin/engines"), where
        assert response.json()["error"]["code"] == "engine_host_not_allowed"


@schema.parametrize()
@settings(max_examples=100, **SETTINGS)
def test_no_input_makes_the_gateway_fail(case: Any, fuzz_gateway: Any) -> None:
    _check(case, fuzz_gateway)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=1000, **SETTINGS)
def test_no_input_makes_the_gateway_fail_long(case: Any, fuzz_gateway: Any) -> None:
    _check(case, fuzz_gateway)
