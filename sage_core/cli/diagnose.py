"""``sage diagnose JOB`` and ``sage whatif JOB``: attribution and prediction from a
job's record (``sage_core.diagnosis``)."""

from __future__ import annotations

import json
from typing import Any

import click

from sage_core.cli.explain import from_scheduler, table
from sage_core.cli.tls import security_from, tls_options

CORES_HELP = "Replicas of one worker process computing at once (1: GIL-bound Python)."
HOST_HELP = "All workers share one machine with this many cores (default: no cap)."


ADDRESS_HELP = "Read the (running) job's live counters from this scheduler's board."


def load_model(job: str, cores_per_worker: int, address: str | None, tls: Any) -> Any:
    """The diagnosis model of JOB's record (or, with ``address``, of the scheduler's
    live view of it); user errors as ClickException."""
    from sage_core.diagnosis import DiagnosisError, job_model
    from sage_core.diagnosis.model import live_record
    from sage_core.observe.records import JobRecordNotFound, load_record

    if any(tls) and not address:
        raise click.UsageError("--tls-* options need --address")
    try:
        if address:
            entry = from_scheduler(address, job, security_from("client", *tls))
            record = live_record(entry)
        else:
            record = load_record(job)
        return job_model(record, cores_per_worker=cores_per_worker)
    except (JobRecordNotFound, DiagnosisError) as exc:
        raise click.ClickException(str(exc)) from None


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _tail_line(tail: dict[str, Any]) -> str:
    """The slowest traced packets against the typical ones, and where they differ."""
    e = tail["end_to_end_ms"]
    most = ", ".join(
        f"{p['replica']} {p['part'].replace('_', ' ')} +{p['extra_ms']:.1f} ms"
        for p in tail["parts"][:3]
        if p["extra_ms"] > 0
    )
    return (
        f"slowest {tail['slowest']} of {tail['traces']} traced packets: "
        f"{e['slowest']:.1f} ms against {e['typical']:.1f} ms typical"
        + (f"; the difference is mostly {most}" if most else "")
    )


def _ratios(effect: dict[str, float | None]) -> str:
    tp, p99 = effect["throughput_ratio"], effect["p99_ratio"]
    return f"x{_f(tp)} / x{_f(p99)}"


@click.command("diagnose")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON.")
@click.option("--cores-per-worker", default=1, show_default=True, help=CORES_HELP)
@click.option("--host-cores", type=int, default=None, help=HOST_HELP)
@click.option("--address", default=None, help=ADDRESS_HELP)
@tls_options
def diagnose_cmd(
    job: str,
    as_json: bool,
    cores_per_worker: int,
    host_cores: int | None,
    address: str | None,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Name the bottleneck of JOB (id or unique prefix) and rank fixes by their
    predicted effect."""
    from sage_core.diagnosis import DiagnosisError
    from sage_core.diagnosis.attribute import diagnose

    tls = (tls_ca_file, tls_cert, tls_key)
    model = load_model(job, cores_per_worker, address, tls)
    try:
        out = diagnose(model, host_cores=host_cores)
    except DiagnosisError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(out, indent=2, default=repr))
        return
    b = out["bottleneck"]
    click.echo(
        f"job {out['job']}: {out['measured']['throughput']:.0f} items/s; "
        f"bottleneck {b['operator']} ({b['class']}): {json.dumps(b['evidence'])}"
    )
    rows = [
        [
            r["operator"],
            str(len(r["replicas"])),
            _f(r["utilisation"]),
            _f(r["blocked"]),
            _f(r["queue_wait_ms"], ".3f"),
            _f(r["service_ms"], ".3f"),
            _f(r["blocked_ms"], ".3f"),
            _f(r["transport_ms"], ".3f"),
        ]
        for r in out["breakdown"]
    ]
    header = [
        "operator",
        "repl",
        "busy",
        "blocked",
        "queue ms",
        "service ms",
        "blk ms",
        "transit ms",
    ]
    click.echo(table(rows, header))
    click.echo(
        f"critical path: {' -> '.join(out['critical_path'])}; between hops "
        f"{_f(out['transport_ms'], '.3f')} ms"
    )
    if out["tail"]:
        click.echo(_tail_line(out["tail"]))
    recs = [
        [
            str(i + 1),
            r["action"],
            _f(r["predicted"]["throughput"], ".0f"),
            _f(r["predicted"]["p99_ms"], ".2f"),
            _ratios(r["effect"]),
        ]
        for i, r in enumerate(out["recommendations"])
    ]
    click.echo(
        table(recs, ["#", "recommendation", "items/s", "p99 ms", "vs now (tput / p99)"])
    )
    if out["recommendations"] and all(
        r["gain"] in ("none", "loss") for r in out["recommendations"]
    ):
        click.echo(
            "no change above is predicted to raise throughput or cut p99 by more "
            "than the model's error (5%)"
        )


@click.command("whatif")
@click.argument("job")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="OP.KNOB=N",
    help="OP.parallelism=N, OP.batch_size=B, OP.queue_capacity=N, queue_capacity=N "
    "or buffer_size=N (repeatable).",
)
@click.option("--policy", default=None, help="Place replicas with this policy.")
@click.option("--workers", type=int, default=None, help="Project onto N workers.")
@click.option("--cores-per-worker", default=1, show_default=True, help=CORES_HELP)
@click.option(
    "--host-cores",
    type=int,
    default=None,
    help=HOST_HELP,
)
@click.option(
    "--also-run",
    "also",
    multiple=True,
    metavar="JOB",
    help="Another recorded run of the same pipeline, pooled with JOB's (its traces "
    "and duration; repeatable): steadier latency predictions.",
)
@click.option(
    "--calibrate-with",
    "calibrations",
    multiple=True,
    metavar="JOB",
    help="A run of the same pipeline at other batch sizes (repeatable): its service "
    "times fill the sizes JOB did not run (e.g. an engine stage always called with "
    "full batches).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
@click.option("--address", default=None, help=ADDRESS_HELP)
@tls_options
def whatif_cmd(
    job: str,
    sets: tuple[str, ...],
    also: tuple[str, ...],
    calibrations: tuple[str, ...],
    policy: str | None,
    workers: int | None,
    cores_per_worker: int,
    host_cores: int | None,
    as_json: bool,
    address: str | None,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Predict JOB's throughput, latency and utilisation under changes."""
    from sage_core.diagnosis import DiagnosisError, pool_runs
    from sage_core.diagnosis.calibrate import extend_service
    from sage_core.diagnosis.whatif import Change, predict

    if workers is not None and workers < 1:
        raise click.UsageError("--workers must be >= 1")
    tls = (tls_ca_file, tls_cert, tls_key)
    model = load_model(job, cores_per_worker, address, tls)
    try:
        runs = [load_model(j, cores_per_worker, None, (None, None, None)) for j in also]
        model = pool_runs(model, runs)
        calib = [
            load_model(j, cores_per_worker, None, (None, None, None))
            for j in calibrations
        ]
        model = extend_service(model, calib)
        changes = [Change.parse(s) for s in sets]
        out = predict(
            model,
            changes,
            policy=policy,
            workers=workers,
            cores_per_worker=cores_per_worker,
            host_cores=host_cores,
        )
    except DiagnosisError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    base = out["baseline"]
    click.echo(
        f"job {model.job} {' '.join(out['changes']) or '(no change)'} policy "
        f"{out['policy']} on {len(out['workers'])} worker(s): "
        f"{out['throughput']:.0f} items/s (measured {base['measured_throughput']:.0f}),"
        f" p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} ms"
    )
    rows = [
        [
            name,
            str(op["replicas"]),
            _f(op["utilisation"]),
            _f(op["blocked"]),
            _f(op["queue_wait_ms"], ".3f"),
            _f(op["service_ms"], ".3f"),
        ]
        for name, op in out["operators"].items()
    ]
    click.echo(
        table(rows, ["operator", "repl", "busy", "blocked", "queue ms", "service ms"])
    )
    for note in out["validity"]:
        click.echo(f"validity: {note}")


def attach(cli: click.Group) -> None:
    """Add ``diagnose`` and ``whatif`` to the ``sage`` group."""
    cli.add_command(diagnose_cmd)
    cli.add_command(whatif_cmd)
