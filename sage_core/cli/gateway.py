"""``sage gateway``: the OpenAI-compatible gateway over the LLM control plane."""

from __future__ import annotations

import logging

import click

from sage_core.common.settings import DEFAULT_GATEWAY_PORT


@click.command("gateway")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=int,
    default=DEFAULT_GATEWAY_PORT,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Gateway YAML config (engines, policy, router, limits, API keys).",
)
@click.option("--policy", default=None, help="Request policy (overrides the config).")
@click.option("--router", default=None, help="Engine router (overrides the config).")
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="Accepted API key (repeatable; overrides the config's list).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Logging level.",
)
def gateway(
    host: str,
    port: int,
    config_path: str | None,
    policy: str | None,
    router: str | None,
    api_keys: tuple[str, ...],
    log_level: str,
) -> None:
    """Serve /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models,
    /health, /metrics and /admin/* over the configured engines."""
    import uvicorn

    from sage_core.common.errors import SageError
    from sage_core.gateway import create_app
    from sage_core.llm.config import GatewayConfig
    from sage_core.llm.plane import make_policy, make_router

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s",
    )
    try:
        config = (
            GatewayConfig.from_file(config_path) if config_path else GatewayConfig()
        )
        config = config.with_overrides(
            policy=policy, router=router, api_keys=tuple(api_keys) or None
        )
        make_policy(config.policy, dict(config.policy_config))
        make_router(config.router, dict(config.router_config))
    except SageError as exc:
        raise click.ClickException(str(exc)) from None
    app = create_app(config)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=int(config.drain_timeout_s),
    )
