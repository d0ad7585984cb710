"""`sage scheduler` / `sage worker` / `sage run` TLS options and the warning printed
when a server listens beyond loopback without TLS (no server is started here)."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sage_core.cli import cli
from sage_core.cli.tls import exposure_warning, security_from


@pytest.fixture
def no_serving(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replaces Dask's asyncio_run: the commands stop before serving or connecting."""
    import distributed.compatibility

    ran: list[str] = []

    def fake_run(coro: Coroutine[Any, Any, Any], **kwargs: Any) -> None:
        ran.append(coro.__qualname__)
        coro.close()

    monkeypatch.setattr(distributed.compatibility, "asyncio_run", fake_run)
    return ran


@pytest.fixture
def pem_files(tmp_path: Path) -> list[str]:
    """Paths of three files standing in for CA, certificate and key (never read)."""
    paths = []
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("placeholder\n")
        paths.append(str(tmp_path / name))
    return paths


def _tls_args(pem: list[str]) -> list[str]:
    return ["--tls-ca-file", pem[0], "--tls-cert", pem[1], "--tls-key", pem[2]]


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:")]


def test_scheduler_warns_once_when_open_beyond_loopback(no_serving, pem_files):
    runner = CliRunner()
    default = runner.invoke(cli, ["scheduler", "--port", "0"])
    assert default.exit_code == 0, default.output
    assert no_serving  # it got as far as serving
    [line] = _warnings(default.output)
    assert "scheduler listens on every interface without TLS" in line
    assert "--tls-ca-file" in line and "pickles" in line
    public = runner.invoke(cli, ["scheduler", "--host", "10.1.2.3"])
    assert "on 10.1.2.3 without TLS" in _warnings(public.output)[0]
    local = runner.invoke(cli, ["scheduler", "--host", "127.0.0.1"])
    assert local.exit_code == 0 and _warnings(local.output) == []
    tls = runner.invoke(cli, ["scheduler", *_tls_args(pem_files)])
    assert tls.exit_code == 0 and _warnings(tls.output) == []


def test_worker_warns_once_when_open_beyond_loopback(no_serving) -> None:
    runner = CliRunner()
    default = runner.invoke(cli, ["worker", "tcp://127.0.0.1:8786"])
    assert default.exit_code == 0, default.output
    [line] = _warnings(default.output)
    assert "worker listens on every interface without TLS" in line
    local = runner.invoke(cli, ["worker", "tcp://127.0.0.1:8786", "--host", "::1"])
    assert local.exit_code == 0 and _warnings(local.output) == []


def test_worker_with_tls_does_not_warn(no_serving, tls_maker, tmp_path) -> None:
    pem = list(tls_maker(tmp_path / "tls"))  # the worker loads them to connect
    tls = CliRunner().invoke(cli, ["worker", "tls://127.0.0.1:8786", *_tls_args(pem)])
    assert tls.exit_code == 0, tls.output
    assert _warnings(tls.output) == []
    assert no_serving == ["_wait_for_scheduler", "worker.<locals>.run"]


def test_tls_options_go_together_and_match_the_address(no_serving, pem_files):
    runner = CliRunner()
    partial = runner.invoke(cli, ["scheduler", "--tls-cert", pem_files[1]])
    assert partial.exit_code == 2
    assert "missing --tls-ca-file, --tls-key" in partial.output
    plain = runner.invoke(cli, ["worker", "tls://127.0.0.1:8786"])
    assert plain.exit_code == 2 and "speaks TLS" in plain.output
    tcp = runner.invoke(
        cli, ["scheduler", "--host", "tcp://0.0.0.0", *_tls_args(pem_files)]
    )
    assert tcp.exit_code == 2 and "other than tls://" in tcp.output
    local_run = runner.invoke(cli, ["run", pem_files[0], *_tls_args(pem_files)])
    assert local_run.exit_code == 2 and "need --address" in local_run.output
    assert no_serving == []


def test_security_objects_carry_each_role(pem_files) -> None:
    assert security_from("client", None, None, None) is None
    for role in ("scheduler", "worker", "client"):
        security = security_from(role, *pem_files)
        assert security is not None and security.require_encryption
        assert getattr(security, f"tls_{role}_cert") == pem_files[1]
        assert getattr(security, f"tls_{role}_key") == pem_files[2]
        assert security.tls_ca_file == pem_files[0]


def test_exposure_warning_only_beyond_loopback_without_tls(pem_files) -> None:
    tls = security_from("scheduler", *pem_files)
    assert exposure_warning("scheduler", "127.0.0.1", None) == ""
    assert exposure_warning("scheduler", "localhost", None) == ""
    assert exposure_warning("scheduler", "0.0.0.0", tls) == ""
    assert exposure_warning("scheduler", "tls://0.0.0.0", None) == ""
    assert exposure_warning("scheduler", "0.0.0.0", None).count("\n") == 0
    assert "every interface" in exposure_warning("worker", None, None)
    assert "tcp://0.0.0.0" in exposure_warning("worker", "tcp://0.0.0.0", None)


def test_clients_of_a_tls_scheduler_need_credentials(tmp_path: Path) -> None:
    from sage_core.api.dask_environment import DaskEnvironment
    from sage_core.common.errors import ClusterSecurityError

    env = DaskEnvironment("job", address="tls://127.0.0.1:1")
    with pytest.raises(ClusterSecurityError, match="tls_client_cert"):
        _ = env.client
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text('{"address": "tls://127.0.0.1:1"}')
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\noperators: []\n")
    result = CliRunner().invoke(
        cli, ["run", str(spec), "--scheduler-file", str(scheduler_file)]
    )
    assert result.exit_code == 1 and "--tls-ca-file" in result.output
