"""The sage CLI in-process: version, plugin listing, and user mistakes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click
import pytest
from click.testing import CliRunner

from sage_core import __version__, hookimpl
from sage_core.cli import cli
from sage_core.cli.cluster import parse_resources


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"sage, version {__version__}"


def test_plugins_lists_registered_entries_as_json(register_plugin: Callable) -> None:
    class Plugin:
        @hookimpl
        def register_backends(self, register: Any) -> None:
            register("throwaway-backend", object, capabilities=("embed",))

        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            cli.add_command(click.Command("throwaway-cmd", callback=lambda: None))

    register_plugin(Plugin(), "throwaway")
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    by_name = {(row["kind"], row["name"]): row for row in rows}
    backend = by_name[("backend", "throwaway-backend")]
    assert backend["plugin"] == "throwaway"
    assert backend["hooks"] == ["register_backends", "register_commands"]
    assert ("command", "throwaway-cmd") in by_name

    only = json.loads(CliRunner().invoke(cli, ["plugins", "--kind", "backend"]).output)
    assert {row["kind"] for row in only} == {"backend"}


def test_info_reports_native_build() -> None:
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["version"] == __version__
    assert info["native"]["version"] == __version__


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["shedulr"])
    assert result.exit_code == 2
    assert "No such command 'shedulr'" in result.output


def test_unknown_option_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["scheduler", "--prot", "1"])
    assert result.exit_code == 2
    assert "No such option" in result.output and "--prot" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GPU=1", {"GPU": 1.0}),
        ("GPU=2 MEM=8e9", {"GPU": 2.0, "MEM": 8e9}),
        ("GPU=1,TPU=0.5", {"GPU": 1.0, "TPU": 0.5}),
        ("", {}),
    ],
)
def test_resources_parse_dask_syntax(text: str, expected: dict[str, float]) -> None:
    assert parse_resources(text) == expected


@pytest.mark.parametrize("text", ["GPU", "GPU=one", "=1", "GPU=-1"])
def test_bad_resources_are_rejected(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_resources(text)


def test_worker_rejects_bad_resources_before_connecting() -> None:
    result = CliRunner().invoke(
        cli, ["worker", "tcp://127.0.0.1:1", "--resources", "GPU=lots"]
    )
    assert result.exit_code == 2
    assert "--resources" in result.output


def test_worker_needs_an_address() -> None:
    result = CliRunner().invoke(cli, ["worker"])
    assert result.exit_code == 2
    assert "ADDRESS or --scheduler-file" in result.output


def test_worker_missing_scheduler_file_is_clear(tmp_path: Any) -> None:
    path = tmp_path / "nope.json"
    result = CliRunner().invoke(cli, ["worker", "--scheduler-file", str(path)])
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_worker_at_closed_port_fails_clearly_in_bounded_time(
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    started = time.monotonic()
    result = CliRunner().invoke(
        cli, ["worker", f"tcp://127.0.0.1:{port}", "--death-timeout", "2"]
    )
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    waiting = f"waiting up to 2 s (--death-timeout) for the scheduler at tcp://127.0.0.1:{port}"
    assert waiting in result.output  # said before the wait, not only after it
    assert result.output.index(waiting) < result.output.index("no scheduler reachable")
    assert f"no scheduler reachable at tcp://127.0.0.1:{port}" in result.output
    assert "sage scheduler" in result.output
    assert elapsed < 60  # bounded by --death-timeout, not Dask's connect retries
