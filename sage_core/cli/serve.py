"""``sage serve SPEC``: a pipeline as an HTTP service on the embedded runtime."""

from __future__ import annotations

from pathlib import Path

import click

from sage_core.cli.pipeline import _settings, _spec_arg


@click.command("serve")
@_spec_arg
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", type=int, default=8890, show_default=True, help="HTTP port.")
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Requests admitted and not yet answered; 429 + Retry-After beyond.",
)
@click.option(
    "--deadline-ms",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Deadline of requests sent without X-SLO-Deadline-Ms (default: none).",
)
@click.option("--policy", default=None, help="Placement policy (plugin name).")
def serve_cmd(
    spec: Path,
    host: str,
    port: int,
    max_in_flight: int,
    deadline_ms: float | None,
    policy: str | None,
) -> None:
    """Serve the pipeline SPEC over HTTP until interrupted.

    Its source and sink become the http-request and http-response operators: POST
    an item to /v1/pipelines/NAME, or ask /v1/chat/completions (model NAME) when the
    pipeline's items carry an "answer".
    """
    from sage_core.api.environment import LocalEnvironment
    from sage_core.common.errors import SageError
    from sage_core.graph import load_spec
    from sage_core.serve import PipelineServer

    try:
        loaded = load_spec(spec)
        env = LocalEnvironment(loaded.graph.name, policy=policy)
        env.graph = loaded.graph
        env.settings = _settings(loaded.settings, {})
        server = PipelineServer(
            env, max_in_flight=max_in_flight, deadline_ms=deadline_ms
        )
        server.start()
    except SageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"serving {server.name!r} on http://{host}:{port}/v1/pipelines/{server.name}",
        err=True,
    )
    server.run(host, port, log_level="warning")
