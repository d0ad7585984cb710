"""Gateway access control: admin keys apart from inference keys, constant-time key
checks, the engine-host allow list of POST /admin/engines, and `sage gateway`
refusing to serve an open gateway beyond loopback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from sage_core.common.net import is_loopback_host
from sage_core.gateway import access
from sage_core.gateway.access import EngineHosts, KeyRing, PermissionDeniedError
from sage_core.llm.config import GatewayConfig
from sage_core.llm.errors import ConfigError

ADMIN_ROUTES = [
    ("GET", "/admin/metrics", None),
    ("GET", "/admin/policy", None),
    ("PUT", "/admin/policy", {"policy": "fifo"}),
    ("POST", "/admin/set_policy", {"policy": "fifo"}),
    ("GET", "/admin/engines", None),
    ("POST", "/admin/engines", {"url": "http://127.0.0.1:1", "id": "x"}),
    ("DELETE", "/admin/engines/nope", None),
]
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def _bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _call(client: httpx.Client, method: str, path: str, body: Any, key: str | None):
    return client.request(method, path, json=body, headers=_bearer(key))


def test_an_inference_key_never_opens_admin_routes(engine_double, gateway) -> None:
    a = engine_double("tiny")
    gw = gateway({"engines": [a.spec("a")], "api_keys": ["inf"], "admin_keys": ["adm"]})
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        for method, path, body in ADMIN_ROUTES:
            missing = _call(client, method, path, body, None)
            assert missing.status_code == 401, (path, missing.text)
            wrong = _call(client, method, path, body, "guess")
            assert wrong.status_code == 401, (path, wrong.text)
            inference = _call(client, method, path, body, "inf")
            assert inference.status_code == 403, (path, inference.text)
            error = inference.json()["error"]
            assert (
                error["type"] == "permission_error" and "admin key" in error["message"]
            )
            admin = _call(client, method, path, body, "adm")
            assert admin.status_code not in (401, 403), (path, admin.text)
        # and the admin key is not an inference key
        chat = client.post("/v1/chat/completions", json=CHAT, headers=_bearer("adm"))
        assert chat.status_code == 401
        chat = client.post("/v1/chat/completions", json=CHAT, headers=_bearer("inf"))
        assert chat.status_code == 200


def test_admin_routes_are_closed_with_api_keys_but_no_admin_key(
    engine_double, gateway
) -> None:
    a = engine_double("tiny")
    gw = gateway({"engines": [a.spec("a")], "api_keys": ["inf"]})
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        for method, path, body in ADMIN_ROUTES:
            resp = _call(client, method, path, body, "inf")
            assert resp.status_code == 403, (path, resp.text)
            assert "SAGE_ADMIN_KEY" in resp.json()["error"]["message"]


def test_registering_an_engine_checks_its_host(engine_double, gateway) -> None:
    a, b = engine_double("tiny"), engine_double("tiny")
    gw = gateway({"engines": [a.spec("a")]})
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        for url in (
            "http://10.1.2.3:8000",
            "http://metadata.google.internal",
            "http://127.0.0.1@example.com:80",  # userinfo: the host is example.com
            "https://[2001:db8::1]:443",
        ):
            resp = client.post("/admin/engines", json={"url": url, "id": "evil"})
            assert resp.status_code == 403, (url, resp.text)
            error = resp.json()["error"]
            assert error["param"] == "url"
            assert error["code"] == "engine_host_not_allowed"
            assert "allowed_engine_hosts" in error["message"]
        for url in ("http://0[", "http://[::1", "http://127.0.0.1:99999", "http://:80"):
            resp = client.post("/admin/engines", json={"url": url, "id": "bad"})
            assert resp.status_code == 400, (url, resp.text)
            assert resp.json()["error"]["type"] == "invalid_request_error"
        ok = client.post("/admin/engines", json=b.spec("b"))
        assert ok.status_code == 201
        as_name = client.post(
            "/admin/engines",
            json={**b.spec("c"), "url": b.url.replace("127.0.0.1", "localhost")},
        )
        assert as_name.status_code == 201
        ids = [e["id"] for e in client.get("/admin/engines").json()["engines"]]
    assert ids == ["a", "b", "c"]


def test_engine_hosts_allow_configured_listed_and_loopback_hosts() -> None:
    hosts = EngineHosts(
        ["http://gpu-1.lan:8000", "http://192.0.2.7:8000"],
        ["10.9.0.0/16", "GPU-2.lan", "[2001:db8::5]"],
    )
    allowed = [
        "http://gpu-1.lan:9000",  # a configured engine's host, any port
        "http://192.0.2.7:1",
        "http://gpu-2.lan:8000",
        "http://10.9.200.1:8000",
        "http://[2001:db8::5]:8000",
        "http://[::1]:8000",
        "http://127.0.0.5:8000",
        "http://localhost:8000",
    ]
    for url in allowed:
        hosts.check(url)
    for url in ("http://10.10.0.1", "http://gpu-3.lan", "http://192.0.2.8"):
        with pytest.raises(PermissionDeniedError):
            hosts.check(url)
    EngineHosts([], ["*"]).check("http://anywhere.example:1")


@given(keys=st.lists(st.text(min_size=1), max_size=5), probe=st.text())
def test_key_ring_membership_is_set_membership(keys: list[str], probe: str) -> None:
    assert (probe in KeyRing(keys)) == (probe in keys)
    assert (None in KeyRing(keys)) is False


def test_keys_are_compared_in_constant_time(monkeypatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = access.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", spy)
    ring = KeyRing(["k1", "k2", "k3"])
    assert "k1" in ring
    assert len(compared) == 3  # no early exit on the first match


def test_config_rejects_a_key_that_is_both_inference_and_admin() -> None:
    with pytest.raises(ConfigError, match="both api_keys and admin_keys"):
        GatewayConfig.from_dict({"api_keys": ["k"], "admin_keys": ["k"]})
    with pytest.raises(ConfigError, match="not a network"):
        GatewayConfig.from_dict({"allowed_engine_hosts": ["10.0.0.0/33"]})
    with pytest.raises(ConfigError, match="non-empty strings"):
        GatewayConfig.from_dict({"admin_keys": "k"})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("tls://127.0.0.1:8786", True),
        ("", False),
        (None, False),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("myhost", False),
        ("tls://", False),
    ],
)
def test_loopback_hosts(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.fixture
def served_configs(monkeypatch) -> list[Any]:
    """Replaces uvicorn.run: records the app `sage gateway` would serve."""
    import uvicorn

    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append((app, kw)))
    monkeypatch.delenv("SAGE_ADMIN_KEY", raising=False)
    return apps


def _gateway_cli(*args: str, env: dict[str, str] | None = None) -> Any:
    from sage_core.cli.gateway import gateway

    return CliRunner().invoke(gateway, list(args), env=env)


def test_gateway_refuses_an_open_non_loopback_address(served_configs, caplog):
    refused = _gateway_cli("--host", "0.0.0.0")
    assert refused.exit_code == 1 and served_configs == []
    assert "without API keys" in refused.output and "--insecure" in refused.output
    with caplog.at_level("WARNING", logger="sage_core.cli.gateway"):
        insecure = _gateway_cli("--host", "0.0.0.0", "--insecure")
    assert insecure.exit_code == 0, insecure.output
    assert "--insecure" in caplog.text and "/admin is open" in caplog.text
    keyed = _gateway_cli("--host", "0.0.0.0", "--api-key", "k")
    assert keyed.exit_code == 0, keyed.output
    local = _gateway_cli("--host", "127.0.0.1")
    assert local.exit_code == 0, local.output
    assert [kw["host"] for _, kw in served_configs] == [
        "0.0.0.0",
        "0.0.0.0",
        "127.0.0.1",
    ]


def test_gateway_takes_admin_keys_from_the_environment(served_configs) -> None:
    result = _gateway_cli("--api-key", "k", env={"SAGE_ADMIN_KEY": "adm"})
    assert result.exit_code == 0, result.output
    config = served_configs[0][0].state.gateway.config
    assert config.api_keys == ("k",) and config.admin_keys == ("adm",)
    same = _gateway_cli("--api-key", "k", "--admin-key", "k")
    assert same.exit_code == 1 and "both api_keys and admin_keys" in same.output


def test_engine_commands_send_the_admin_key(engine_double, gateway) -> None:
    from sage_core.cli.engine_admin import add_engine, list_engines

    llm = engine_double("tiny")
    gw = gateway({"api_keys": ["inf"], "admin_keys": ["adm"]})
    runner = CliRunner()
    keyless = runner.invoke(
        list_engines, ["--gateway", gw.url], env={"SAGE_ADMIN_KEY": None}
    )
    assert keyless.exit_code == 1 and "401" in keyless.output
    inference = runner.invoke(list_engines, ["--gateway", gw.url, "--admin-key", "inf"])
    assert inference.exit_code == 1 and "403" in inference.output
    added = runner.invoke(
        add_engine,
        ["--url", llm.url, "--model", "tiny", "--id", "a", "--gateway", gw.url],
        env={"SAGE_ADMIN_KEY": "adm"},
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(list_engines, ["--gateway", gw.url, "--admin-key", "adm"])
    assert [e["id"] for e in json.loads(listed.output)] == ["a"]


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = ["id", "url", "kind", "model", "models", "max_inflight", "api_key"]


@given(
    entry=st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=7),
    url=st.sampled_from(["http://127.0.0.1:1", None]),
)
def test_any_json_engine_entry_is_a_spec_or_a_config_error(
    entry: dict[str, Any], url: str | None
) -> None:
    from sage_core.llm.engine_spec import EngineSpec

    if url is not None:
        entry = {**entry, "url": url}
    try:
        spec = EngineSpec.from_dict(entry)
    except ConfigError:
        return
    assert all(isinstance(m, str) for m in spec.models)
    assert spec.api_key is None or isinstance(spec.api_key, str)


def test_malformed_engine_fields_are_400(engine_double, gateway) -> None:
    gw = gateway({})
    for body in (
        {"url": "http://127.0.0.1:1", "models": True},  # found by the long fuzz run
        {"url": "http://127.0.0.1:1", "max_inflight": 1e400},
        {"url": "http://127.0.0.1:1", "api_key": ["x"]},
    ):
        resp = httpx.post(gw.url + "/admin/engines", content=json.dumps(body))
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"]["type"] == "invalid_request_error"
