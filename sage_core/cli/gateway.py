"""``sage gateway``: the OpenAI-compatible gateway over the LLM control plane.

It serves on loopback by default. On any other address it refuses to start without
API keys (anyone reaching the port could use the engines and, with no admin key,
reconfigure the gateway) unless ``--insecure`` is given.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from sage_core.common.net import is_loopback_host
from sage_core.common.settings import DEFAULT_GATEWAY_PORT

if TYPE_CHECKING:
    from sage_core.llm.config import GatewayConfig

logger = logging.getLogger(__name__)


def check_exposure(host: str, config: GatewayConfig, *, insecure: bool) -> None:
    """Refuse to serve beyond loopback without API keys unless ``insecure``.

    Raises:
        click.ClickException: ``host`` is not loopback, no API key is configured and
            ``insecure`` is False.
    """
    if is_loopback_host(host) or config.api_keys:
        if not config.admin_keys and config.api_keys:
            logger.info("no admin key: the /admin routes are closed")
        return
    if not insecure:
        raise click.ClickException(
            f"refusing to serve on {host or 'every interface'} without API keys: "
            f"anyone who reaches the port could use the engines and reconfigure the "
            f"gateway. Set api_keys (and admin_keys) in --config, or --api-key and "
            f"--admin-key / SAGE_ADMIN_KEY; serve on 127.0.0.1; or pass --insecure "
            f"if the network is trusted."
        )
    logger.warning(
        "--insecure: serving on %s without API keys%s; anyone who reaches the port "
        "can use the engines",
        host or "every interface",
        "" if config.admin_keys else " or admin keys (/admin is open too)",
    )


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
    "--admin-key",
    "admin_keys",
    multiple=True,
    envvar="SAGE_ADMIN_KEY",
    help="Key of the /admin routes, distinct from API keys (repeatable; default "
    "$SAGE_ADMIN_KEY; overrides the config's admin_keys).",
)
@click.option(
    "--record-decisions",
    "decision_log",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append every dispatch decision to this JSON-lines file (replay it with "
    "`sage explain --dispatch-log FILE --replay POLICY`).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Serve on a non-loopback address without API keys (trusted networks only).",
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
    admin_keys: tuple[str, ...],
    decision_log: str | None,
    insecure: bool,
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
            policy=policy,
            router=router,
            api_keys=tuple(api_keys) or None,
            admin_keys=tuple(admin_keys) or None,
            decision_log=decision_log,
        )
        make_policy(config.policy, dict(config.policy_config))
        make_router(config.router, dict(config.router_config))
    except SageError as exc:
        raise click.ClickException(str(exc)) from None
    check_exposure(host, config, insecure=insecure)
    app = create_app(config)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=int(config.drain_timeout_s),
    )
