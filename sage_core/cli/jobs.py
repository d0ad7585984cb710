"""``sage submit SPEC`` and ``sage jobs list|status|stop|logs``: jobs that run on the
cluster's job manager and outlive this command."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from sage_core.cli.pipeline import _cluster_client, _spec_arg
from sage_core.cli.tls import tls_options

F = TypeVar("F", bound=Callable[..., Any])


def _cluster_options(command: F) -> F:
    """Adds ``--address``/``--scheduler-file`` and the TLS options to ``command``,
    which is called with ``jc``, an open ``JobClient`` of that cluster, instead."""

    @functools.wraps(command)
    def run(
        *args: Any,
        address: str | None,
        scheduler_file: str | None,
        tls_ca_file: str | None,
        tls_cert: str | None,
        tls_key: str | None,
        **kwargs: Any,
    ) -> Any:
        tls = (tls_ca_file, tls_cert, tls_key)
        with _job_client(address, scheduler_file, tls) as jc:
            return command(*args, jc=jc, **kwargs)

    wrapped = tls_options(run)
    wrapped = click.option(
        "--scheduler-file", default=None, help="Read the scheduler address here."
    )(wrapped)
    return click.option(
        "--address", default=None, help="The scheduler (tcp://host:8786)."
    )(wrapped)  # type: ignore[return-value]


@contextmanager
def _job_client(
    address: str | None,
    scheduler_file: str | None,
    tls: tuple[str | None, str | None, str | None],
) -> Iterator[Any]:
    from sage_core.api.jobs import JobClient
    from sage_core.common.errors import SageError

    if not (address or scheduler_file):
        raise click.UsageError("give the cluster: --address or --scheduler-file")
    dask_client = _cluster_client(address, scheduler_file, tls)
    try:
        client = JobClient(client=dask_client)
        yield client
    except SageError as exc:  # JobError, or the manager could not be installed
        raise click.ClickException(str(exc)) from None
    finally:
        dask_client.close()


@click.command("submit")
@_spec_arg
@click.option("--owner", default="", help="Who the job belongs to (a free label).")
@click.option("--priority", type=int, default=0, help="Job priority (priority policy).")
@click.option("--policy", default=None, help="Placement policy (plugin name).")
@_cluster_options
def submit_cmd(
    spec: Path,
    owner: str,
    priority: int,
    policy: str | None,
    jc: Any,
) -> None:
    """Run SPEC on the cluster's job manager; print the job id and return at once.

    The job runs from the scheduler process, so it goes on after this command
    exits; follow it with `sage jobs status|logs JOB`.
    """
    click.echo(jc.submit(spec, owner=owner, priority=priority, policy=policy))


@click.group("jobs")
def jobs_group() -> None:
    """List, inspect and stop the jobs of a cluster's job manager."""


@jobs_group.command("list")
@_cluster_options
def list_cmd(
    jc: Any,
) -> None:
    """Every job as JSON (id, name, owner, priority, policy, status ...)."""
    click.echo(json.dumps(jc.list(), indent=2))


def _one_job_command(name: str, doc: str, call: Callable[[Any, str], Any]) -> None:
    @jobs_group.command(name, help=doc)
    @click.argument("job")
    @_cluster_options
    def command(job: str, jc: Any) -> None:
        out = call(jc, job)
        click.echo("\n".join(out) if name == "logs" else json.dumps(out, indent=2))


_one_job_command("status", "One job's summary as JSON.", lambda jc, j: jc.status(j))
_one_job_command(
    "logs", "What happened to JOB, one line each.", lambda jc, j: jc.logs(j)
)


@jobs_group.command("stop")
@click.argument("job")
@click.option(
    "--drain",
    is_flag=True,
    help="Let the sources stop and the items in flight reach the sinks.",
)
@_cluster_options
def stop_cmd(
    job: str,
    drain: bool,
    jc: Any,
) -> None:
    """Cancel JOB (its replicas stop), or with --drain end it cleanly (status
    drained); prints its summary as JSON."""
    click.echo(json.dumps(jc.stop(job, drain=drain), indent=2))


@jobs_group.command("scale")
@click.argument("job")
@click.argument("changes", nargs=-1, required=True, metavar="OP=N...")
@_cluster_options
def scale_cmd(job: str, changes: tuple[str, ...], jc: Any) -> None:
    """Run operator OP of JOB on N replicas from now on, in place: replicas are
    added or retired while the job runs (a stateless map, filter or flat_map);
    prints each change as JSON."""
    out = []
    for op, n in _scale_changes(changes).items():
        out.append(jc.scale(job, op, n))
    click.echo(json.dumps(out, indent=2))


def _scale_changes(changes: tuple[str, ...]) -> dict[str, int]:
    parsed: dict[str, int] = {}
    for text in changes:
        op, sep, raw = text.partition("=")
        if not sep or not op or not raw.strip().isdigit() or int(raw) < 1:
            raise click.BadParameter(
                f"{text!r} is not OP=N with N >= 1, e.g. embed=4", param_hint="OP=N"
            )
        parsed[op] = int(raw)
    return parsed


@jobs_group.command("admission")
@click.argument("policy", required=False)
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    callback=lambda ctx, param, value: _key_values(value),
    help="A policy option KEY=VALUE (a JSON value), e.g. -o delta_s=5.",
)
@_cluster_options
def admission_cmd(policy: str | None, options: dict[str, Any], jc: Any) -> None:
    """Show, or set to POLICY, the cluster's job admission policy (immediate,
    staggered, utilisation, fair-share or a plugin's)."""
    if options and policy is None:
        raise click.UsageError("-o options need a POLICY")
    click.echo(json.dumps(jc.admission(policy, **options), indent=2))


def _key_values(options: tuple[str, ...]) -> dict[str, Any]:
    """``-o KEY=VALUE`` options as a mapping (VALUE parsed as JSON, else a string)."""
    parsed: dict[str, Any] = {}
    for opt in options:
        key, sep, raw = opt.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{opt!r} is not KEY=VALUE", param_hint="-o")
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = raw
    return parsed


def attach(cli: click.Group) -> None:
    """Add ``submit`` and ``jobs`` to the ``sage`` group."""
    cli.add_command(submit_cmd)
    cli.add_command(jobs_group)
