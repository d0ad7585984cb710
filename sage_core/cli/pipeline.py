"""``sage run SPEC`` and ``sage plan SPEC``: pipelines from YAML/JSON specs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from sage_core.cli.tls import security_from, tls_options


def _settings(spec_settings: dict[str, Any], overrides: dict[str, Any]) -> Any:
    from sage_core.compiler.plan import PlanFormatError, RuntimeSettings

    merged = {k: v for k, v in spec_settings.items() if k != "parallelism"}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RuntimeSettings.from_mapping(merged)
    except PlanFormatError as exc:
        raise click.ClickException(f"settings: {exc}") from None
    except TypeError as exc:
        raise click.ClickException(f"settings: {exc}") from None


def _compile(
    spec_path: Path, overrides: dict[str, Any], policy: str | None, client: Any = None
) -> Any:
    from sage_core.api.environment import detect_gpus
    from sage_core.common.errors import SageError
    from sage_core.compiler import ClusterView, compile_plan
    from sage_core.graph import load_spec

    try:
        spec = load_spec(spec_path)
        if client is not None:  # placed on the Dask cluster's workers
            from sage_core.runtime.cluster_view import cluster_view

            cluster = cluster_view(client)
            policy = policy or "load-aware-spread"
        else:
            gpus = detect_gpus()
            cluster = ClusterView.local({"GPU": float(gpus)} if gpus else {})
        settings = _settings(spec.settings, overrides)
        return compile_plan(spec.graph, cluster, policy, settings=settings)
    except SageError as exc:
        raise click.ClickException(str(exc)) from None


_spec_arg = click.argument(
    "spec", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
_policy_opt = click.option(
    "--policy", default=None, help="Placement policy (scheduler plugin name)."
)


@click.command("plan")
@_spec_arg
@click.option("--json", "as_json", is_flag=True, help="Print the full plan as JSON.")
@click.option("--dot", "as_dot", is_flag=True, help="Print the plan as Graphviz DOT.")
@click.option("--no-chaining", is_flag=True, help="Compile without operator chaining.")
@_policy_opt
def plan_cmd(
    spec: Path, as_json: bool, as_dot: bool, no_chaining: bool, policy: str | None
) -> None:
    """Compile SPEC (YAML/JSON) and print its execution plan."""
    if as_json and as_dot:
        raise click.UsageError("--json and --dot exclude each other")
    overrides = {"chaining": False} if no_chaining else {}
    plan = _compile(spec, overrides, policy)
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=2))
        return
    if as_dot:
        from sage_core.compiler import plan_to_dot

        click.echo(plan_to_dot(plan), nl=False)
        return
    click.echo(f"job {plan.job}: {len(plan.replicas)} replicas, policy {plan.policy}")
    for task in plan.tasks:
        ids = ", ".join(r.id for r in plan.replicas_of(task.name))
        click.echo(f"  task {task.name}  x{task.parallelism}  [{ids}]")
    for ch in plan.channels:
        how = "forward" if ch.partition == "forward" else ch.router
        key = f" key={ch.key.name}" if ch.key else ""
        click.echo(f"  {ch.src_task} -> {ch.dst_task}  {how}{key}")


@click.command("run")
@_spec_arg
@click.option("--timeout", type=float, default=None, help="Seconds before cancelling.")
@click.option("--buffer-size", type=int, default=None, help="Items per packet.")
@click.option("--queue-capacity", type=int, default=None, help="Packets per queue.")
@click.option(
    "--trace-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append sampled packet traces to this JSONL file.",
)
@click.option(
    "--metrics-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the job's metrics and results summary as JSON here.",
)
@_policy_opt
@click.option(
    "--address",
    default=None,
    help="Run on the Dask cluster of this scheduler (tcp://host:8786) as actors.",
)
@click.option("--scheduler-file", default=None, help="Read the scheduler address here.")
@click.option("--priority", type=int, default=0, help="Job priority (priority policy).")
@click.option(
    "--checkpoint-interval",
    type=float,
    default=None,
    help="Seconds between checkpoints (default: the spec's, else off).",
)
@click.option(
    "--checkpoint-dir",
    default=None,
    help="Checkpoint directory or fsspec URL (default: the data directory).",
)
@click.option(
    "--checkpoints-retained", type=int, default=None, help="Checkpoints kept per job."
)
@click.option(
    "--restart",
    default=None,
    help="Restart strategy: none, 'fixed(N, DELAY_S)' or "
    "'exponential(INITIAL_S, MAX_S, ATTEMPTS)'.",
)
@click.option(
    "--resume",
    default=None,
    metavar="JOB_ID",
    help="Continue job JOB_ID from its last committed checkpoint.",
)
@tls_options
def run_cmd(
    spec: Path,
    timeout: float | None,
    buffer_size: int | None,
    queue_capacity: int | None,
    trace_out: str | None,
    metrics_out: str | None,
    policy: str | None,
    address: str | None,
    scheduler_file: str | None,
    priority: int,
    checkpoint_interval: float | None,
    checkpoint_dir: str | None,
    checkpoints_retained: int | None,
    restart: str | None,
    resume: str | None,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Run SPEC (YAML/JSON): in this process (threads over native queues), or with
    --address/--scheduler-file as actors on a Dask cluster placed by --policy.

    Sinks write where they are told (``print`` to stdout); a summary line goes to
    stderr, and ``collect`` sinks' items are printed as JSON lines on stdout.

    A spec is code, like a Python file: operators named ``pkg.module:attr`` import
    and run that module here and on every worker. Run only specs you trust.
    """

    overrides = {
        "buffer_size": buffer_size,
        "queue_capacity": queue_capacity,
        "trace_path": trace_out,
        "checkpoint_interval_s": checkpoint_interval,
        "checkpoint_dir": checkpoint_dir,
        "checkpoints_retained": checkpoints_retained,
        "restart": restart,
    }
    client = _cluster_client(address, scheduler_file, (tls_ca_file, tls_cert, tls_key))
    try:
        _run_job(
            spec, overrides, policy, client, timeout, metrics_out, priority, resume
        )
    finally:
        if client is not None:
            client.close()


def _cluster_client(
    address: str | None,
    scheduler_file: str | None,
    tls: tuple[str | None, str | None, str | None],
) -> Any:
    """A Dask client of the cluster the options name (None: no cluster named).

    Raises:
        click.UsageError: TLS options without a cluster.
        click.ClickException: the cluster does not answer or refuses the TLS setup.
    """
    if any(tls) and not (address or scheduler_file):
        raise click.UsageError("--tls-* options need --address or --scheduler-file")
    if not (address or scheduler_file):
        return None
    from sage_core.api.dask_environment import connect_client
    from sage_core.common.errors import ClusterSecurityError

    try:
        return connect_client(address, scheduler_file, security_from("client", *tls))
    except ClusterSecurityError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, TimeoutError) as exc:
        raise click.ClickException(
            f"no Dask scheduler at {address or scheduler_file}: {exc}"
        ) from None


def _run_job(
    spec: Path,
    overrides: dict[str, Any],
    policy: str | None,
    client: Any,
    timeout: float | None,
    metrics_out: str | None,
    priority: int,
    resume: str | None = None,
) -> None:
    from sage_core.common.errors import SageError
    from sage_core.observe.records import run_fields, save_record, update_record
    from sage_core.runtime.job import JobFailed
    from sage_core.runtime.local import LocalRuntime

    placement: Any = policy
    if client is not None and isinstance(policy, str):
        from sage_core.compiler import resolve_policy

        try:
            placement = resolve_policy(policy, priority=priority)
        except SageError as exc:
            raise click.ClickException(str(exc)) from None
    plan = _compile(spec, overrides, placement, client)
    job: Any
    try:
        if client is not None:
            from sage_core.runtime.master import DaskRuntime

            job = DaskRuntime(client).submit(
                plan, job_id=resume, priority=priority, resume=resume is not None
            )
        else:
            job = LocalRuntime().submit(plan, job_id=resume, resume=resume is not None)
            save_record(
                {
                    "job": job.job_id,
                    "name": plan.job,
                    "runtime": "local",
                    "policy": plan.policy,
                    "priority": priority,
                    "status": "running",
                    "plan": plan.to_dict(),
                }
            )
    except SageError as exc:
        raise click.ClickException(str(exc)) from None
    where = "" if client is None else " --address ADDRESS"
    click.echo(
        f"job {job.job_id} running (`sage diagnose {job.job_id}{where}` reads it live)",
        err=True,
    )
    try:
        if client is None:
            interval = plan.settings.metrics_interval_s
            result = wait_recording(job, timeout, interval)
        else:
            result = job.wait(timeout)
    except JobFailed as exc:
        if client is None:
            update_record(job.job_id, status="failed", error=str(exc.cause))
        raise click.ClickException(str(exc.cause)) from None
    except TimeoutError:
        job.cancel()
        job.wait()
        raise click.ClickException(
            f"job {job.job_id} cancelled after {timeout} s"
        ) from None
    except KeyboardInterrupt:
        job.cancel()
        job.wait()
        raise click.Abort() from None
    if client is None:
        update_record(
            job.job_id,
            status=result.status,
            **run_fields(result.duration_s, result.metrics, result.traces),
        )
    collected = {
        name: parts
        for name, parts in result.results.items()
        if plan.operator(name).ref.name == "collect"
    }
    for parts in collected.values():
        for part in parts:
            for item in part:
                click.echo(json.dumps(item, default=repr))
    summary = result.summary()
    if metrics_out:
        Path(metrics_out).write_text(json.dumps(summary, indent=2, default=repr))
    items = sum(
        stats["items_in"]
        for name, stats in summary["operators"].items()
        if plan.operator(name).role == "sink"
    )
    click.echo(
        f"job {result.job_id} {result.status}: {items} items into sinks in "
        f"{result.duration_s:.3f} s, {len(result.dead_letters)} dead-lettered",
        err=True,
    )


def wait_recording(job: Any, timeout: float | None, interval_s: float) -> Any:
    """``job.wait(timeout)`` for a local job, meanwhile writing its live counters and
    traces into its record every ``interval_s`` (``sage diagnose JOB`` of a job still
    running reads them)."""
    from sage_core.observe.records import run_fields, update_record

    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        step = interval_s if left is None else max(0.0, min(interval_s, left))
        try:
            return job.wait(step)
        except TimeoutError:
            if left is not None and left <= interval_s:
                raise
        elapsed = time.monotonic() - started
        update_record(job.job_id, **run_fields(elapsed, job.metrics(), job.traces()))


def attach(cli: click.Group) -> None:
    """Add ``run`` and ``plan`` to the ``sage`` group."""
    cli.add_command(run_cmd)
    cli.add_command(plan_cmd)
