"""``sage serve SPEC``: a pipeline as an HTTP service, its replicas in this process
or, with ``--address``/``--scheduler-file``, on a Dask cluster."""

from __future__ import annotations

from pathlib import Path

import click

from sage_core.cli.pipeline import _cluster_client, _settings, _spec_arg
from sage_core.cli.tls import tls_options


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
@click.option(
    "--address",
    default=None,
    help="Run the replicas on the Dask cluster of this scheduler (tcp://host:8786); "
    "its workers must reach this machine.",
)
@click.option("--scheduler-file", default=None, help="Read the scheduler address here.")
@click.option(
    "--autoscale",
    "autoscale",
    multiple=True,
    metavar="OP=MIN:MAX",
    help="Let operator OP's replicas follow its queue depth between MIN and MAX "
    "(repeatable); decisions at /v1/pipelines/NAME/scaling.",
)
@tls_options
def serve_cmd(
    spec: Path,
    host: str,
    port: int,
    max_in_flight: int,
    deadline_ms: float | None,
    policy: str | None,
    address: str | None,
    scheduler_file: str | None,
    autoscale: tuple[str, ...],
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Serve the pipeline SPEC over HTTP until interrupted.

    Its source and sink become the http-request and http-response operators: POST
    an item to /v1/pipelines/NAME, or ask /v1/chat/completions (model NAME) when the
    pipeline's items carry an "answer". With --address the operators run as actors
    on the cluster and reach this process's request hub over an authenticated
    connection; the HTTP routes stay here.
    """
    from sage_core.api.dask_environment import DEFAULT_POLICY, DaskEnvironment
    from sage_core.api.environment import Environment, LocalEnvironment
    from sage_core.common.errors import SageError
    from sage_core.graph import load_spec
    from sage_core.serve import PipelineServer
    from sage_core.serve.autoscale import parse_range

    client = _cluster_client(address, scheduler_file, (tls_ca_file, tls_cert, tls_key))
    env: Environment
    try:
        loaded = load_spec(spec)
        if client is not None:
            env = DaskEnvironment(
                loaded.graph.name, client=client, policy=policy or DEFAULT_POLICY
            )
        else:
            env = LocalEnvironment(loaded.graph.name, policy=policy)
        env.graph = loaded.graph
        env.settings = _settings(loaded.settings, {})
        server = PipelineServer(
            env,
            max_in_flight=max_in_flight,
            deadline_ms=deadline_ms,
            autoscale=dict(parse_range(a) for a in autoscale),
        )
        server.start()
    except SageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"serving {server.name!r} on http://{host}:{port}/v1/pipelines/{server.name}",
        err=True,
    )
    server.run(host, port, log_level="warning")
