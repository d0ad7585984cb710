"""``sage engine add/list/remove``: manage a gateway's engines.

With ``--config FILE`` the commands edit a gateway config file (read at the next
``sage gateway --config FILE``); otherwise they call a running gateway's admin API
(``--gateway``, default ``$SAGE_GATEWAY_URL`` or ``http://127.0.0.1:8889``) with its
admin key (``--admin-key``, default ``$SAGE_ADMIN_KEY``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from sage_core.common.settings import DEFAULT_GATEWAY_PORT

DEFAULT_GATEWAY = f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}"

gateway_option = click.option(
    "--gateway",
    "gateway_url",
    default=lambda: os.environ.get("SAGE_GATEWAY_URL", DEFAULT_GATEWAY),
    show_default="$SAGE_GATEWAY_URL or " + DEFAULT_GATEWAY,
    help="Base URL of the running gateway.",
)
key_option = click.option(
    "--admin-key",
    default=lambda: os.environ.get("SAGE_ADMIN_KEY"),
    help="Admin key of the gateway (default $SAGE_ADMIN_KEY); API keys do not open "
    "/admin.",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Edit this gateway config file instead of a running gateway.",
)


def _call(method: str, url: str, admin_key: str | None, **kwargs: Any) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    try:
        resp = httpx.request(method, url, headers=headers, timeout=120, **kwargs)
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"cannot reach the gateway at {url}: {exc}; start `sage gateway` or pass "
            f"--gateway / --config"
        ) from None
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text
        raise click.ClickException(
            f"the gateway answered {resp.status_code}: {message}"
        )
    return resp.json()


def _load(path: Path) -> dict[str, Any]:
    import yaml

    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise click.ClickException(f"{path} is not a gateway config (not a mapping)")
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    import yaml

    from sage_core.common.errors import SageError
    from sage_core.llm.config import GatewayConfig

    try:
        GatewayConfig.from_dict(data)
    except SageError as exc:
        raise click.ClickException(str(exc)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@click.command("add")
@click.option("--url", required=True, help="Engine base URL, e.g. http://host:8000.")
@click.option(
    "--kind",
    type=click.Choice(["llm", "embedding"]),
    default="llm",
    show_default=True,
    help="What the engine serves.",
)
@click.option("--model", "models", multiple=True, help="Served model (repeatable).")
@click.option("--id", "engine_id", default=None, help="Engine id (default from URL).")
@click.option(
    "--max-inflight",
    type=int,
    default=8,
    show_default=True,
    help="Requests sent to it at once.",
)
@gateway_option
@key_option
@config_option
def add_engine(
    url: str,
    kind: str,
    models: tuple[str, ...],
    engine_id: str | None,
    max_inflight: int,
    gateway_url: str,
    admin_key: str | None,
    config_path: str | None,
) -> None:
    """Register an engine; prints it as JSON."""
    from sage_core.llm.engine_spec import EngineSpec
    from sage_core.llm.errors import ConfigError

    entry: dict[str, Any] = {"url": url, "kind": kind, "max_inflight": max_inflight}
    if models:
        entry["models"] = list(models)
    if engine_id:
        entry["id"] = engine_id
    try:
        spec = EngineSpec.from_dict(entry)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if config_path:
        path = Path(config_path)
        data = _load(path)
        engines = list(data.get("engines") or [])
        if any(e.get("id") == spec.id for e in engines):
            raise click.ClickException(f"engine {spec.id!r} is already in {path}")
        engines.append(spec.to_dict())
        data["engines"] = engines
        _save(path, data)
        click.echo(json.dumps(spec.to_dict(), indent=2))
        return
    added = _call(
        "POST", f"{gateway_url}/admin/engines", admin_key, json=spec.to_dict()
    )
    click.echo(json.dumps(added, indent=2))


@click.command("list")
@gateway_option
@key_option
@config_option
def list_engines(
    gateway_url: str, admin_key: str | None, config_path: str | None
) -> None:
    """List engines (with live state when asking a gateway) as JSON."""
    if config_path:
        engines = _load(Path(config_path)).get("engines") or []
    else:
        engines = _call("GET", f"{gateway_url}/admin/engines", admin_key)["engines"]
    click.echo(json.dumps(engines, indent=2))


@click.command("remove")
@click.argument("engine_id")
@click.option(
    "--drain/--no-drain",
    default=True,
    show_default=True,
    help="Wait for the engine's in-flight requests first.",
)
@gateway_option
@key_option
@config_option
def remove_engine(
    engine_id: str,
    drain: bool,
    gateway_url: str,
    admin_key: str | None,
    config_path: str | None,
) -> None:
    """Remove an engine (drained first by default); prints it as JSON."""
    if config_path:
        path = Path(config_path)
        data = _load(path)
        engines = list(data.get("engines") or [])
        kept = [e for e in engines if e.get("id") != engine_id]
        if len(kept) == len(engines):
            raise click.ClickException(f"no engine {engine_id!r} in {path}")
        data["engines"] = kept
        _save(path, data)
        click.echo(json.dumps({"id": engine_id, "removed": True}))
        return
    params = {"drain": "true" if drain else "false"}
    removed = _call(
        "DELETE", f"{gateway_url}/admin/engines/{engine_id}", admin_key, params=params
    )
    click.echo(json.dumps(removed, indent=2))


COMMANDS = (add_engine, list_engines, remove_engine)


def attach(group: click.Group) -> None:
    """Add ``add``, ``list`` and ``remove`` to the ``sage engine`` group."""
    for command in COMMANDS:
        group.add_command(command)
