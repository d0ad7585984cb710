"""The ``sage`` command line.

``main()`` loads plugins, lets them add commands (``register_commands``), then runs the
click group. Nothing is loaded at import time; heavy imports live inside command bodies.
"""

from __future__ import annotations

import json
import sys

import click

from sage_core.cli.cluster import scheduler, worker
from sage_core.cli.diagnose import attach as attach_diagnosis
from sage_core.cli.engine import engine
from sage_core.cli.engine_admin import attach as attach_engine_admin
from sage_core.cli.explain import explain_cmd
from sage_core.cli.gateway import gateway
from sage_core.cli.jobs import attach as attach_jobs
from sage_core.cli.pipeline import attach as attach_pipeline
from sage_core.cli.serve import serve_cmd

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 88}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="sage-dask", prog_name="sage")
def cli() -> None:
    """SAGE: LLM inference pipelines as dataflows on Dask."""


@cli.command("plugins")
@click.option(
    "--kind",
    type=click.Choice(
        [
            "operator",
            "placement-policy",
            "request-policy",
            "router",
            "backend",
            "vector-index",
            "dashboard-route",
            "tool",
            "command",
        ]
    ),
    default=None,
    help="Only list entries of this family.",
)
@click.option("--hook", default=None, help="Only list plugins implementing this hook.")
def plugins_cmd(kind: str | None, hook: str | None) -> None:
    """List installed plugins and what they register, as JSON."""
    from sage_core import plugins

    rows = [] if kind == "command" else plugins.describe_all(kind)
    if kind in (None, "command"):

        def add(command: str, plugin: str) -> None:
            dist, version = plugins.origin_of(plugin)
            rows.append(
                {
                    "name": command,
                    "kind": "command",
                    "plugin": plugin,
                    "distribution": dist,
                    "version": version,
                    "hooks": plugins.plugin_hooks(plugin),
                }
            )

        plugins.command_plugins(add)
    if hook:
        rows = [row for row in rows if hook in row["hooks"]]
    rows.sort(key=lambda row: (row["kind"], row["name"]))
    click.echo(json.dumps(rows, indent=2))


@cli.command("info")
def info_cmd() -> None:
    """Print version, native build, plugin counts and data paths, as JSON."""
    from sage_core import __version__, plugins
    from sage_core.channels import build_info
    from sage_core.common import settings

    payload = {
        "version": __version__,
        "python": sys.version.split()[0],
        "native": build_info(),
        "plugins": {kind: len(plugins.registry(kind)) for kind in plugins.KINDS},
        "paths": {
            "data": str(settings.data_dir()),
            "cache": str(settings.cache_dir()),
            "config": str(settings.config_dir()),
            "state": str(settings.state_dir()),
        },
    }
    click.echo(json.dumps(payload, indent=2))


cli.add_command(scheduler)
cli.add_command(worker)
cli.add_command(gateway)
cli.add_command(engine)
attach_engine_admin(engine)
attach_pipeline(cli)
cli.add_command(explain_cmd)
cli.add_command(serve_cmd)
attach_jobs(cli)
attach_diagnosis(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: load plugins, add their commands, run the CLI."""
    from sage_core.common.errors import SageError
    from sage_core.plugins import load_plugins, pm

    try:
        load_plugins()
        pm.hook.register_commands(cli=cli)
    except SageError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    cli.main(args=argv, prog_name="sage")
