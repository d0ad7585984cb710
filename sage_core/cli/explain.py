"""``sage explain JOB``: every placement decision of a job, as a table.

Reads the job record under the state directory (written by ``sage run`` and by the
Dask job master), or asks a scheduler's ``sage-jobs`` board with ``--address``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from sage_core.cli.tls import security_from, tls_options


def _fmt_free(free: dict[str, Any]) -> str:
    shown = {k: v for k, v in free.items() if k != "memory"}
    return " ".join(f"{k}={v:g}" for k, v in sorted(shown.items())) or "-"


def decision_rows(record: dict[str, Any]) -> list[list[str]]:
    """One row per (replica, candidate): chosen mark, free resources, resident
    replicas, score and why a filter removed it."""
    rows = []
    for rep in record["plan"]["replicas"]:
        d = rep["placement"]
        removed: dict[str, str] = {}
        for f in d["filters"]:
            for worker, why in f["removed"].items():
                removed.setdefault(worker, f"{f['name']}: {why}")
        for c in d["candidates"]:
            chosen = c["worker"] == d["worker"]
            rows.append(
                [
                    rep["id"],
                    ("* " if chosen else "  ") + c["worker"],
                    _fmt_free(c["free"]),
                    str(c["replicas"]),
                    "-" if c["score"] is None else f"{c['score']:.3f}",
                    d["reason"] if chosen else removed.get(c["worker"], "lower score"),
                ]
            )
    return rows


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def from_scheduler(address: str, job: str, security: Any) -> dict[str, Any]:
    from sage_core.api.dask_environment import connect_client
    from sage_core.common.errors import ClusterSecurityError

    try:
        client = connect_client(address, None, security)
    except ClusterSecurityError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, TimeoutError) as exc:
        raise click.ClickException(f"no Dask scheduler at {address}: {exc}") from None
    with client:
        found = client.sync(client.scheduler.sage_job, job=job)
    if found is None:
        raise click.ClickException(f"the scheduler at {address} has no job {job!r}")
    return found


@click.command("explain")
@click.argument("job", required=False)
@click.option("--address", default=None, help="Ask this scheduler's job board.")
@click.option(
    "--dispatch-log",
    type=click.Path(dir_okay=False),
    default=None,
    help="Explain a gateway's dispatch decisions instead of a job's placement: the "
    "log `sage gateway --record-decisions` wrote (with --replay POLICY: what POLICY "
    "would have dispatched, and the effect per request class).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decisions as JSON.")
@click.option(
    "--replay",
    "replay_policy",
    default=None,
    metavar="POLICY",
    help="Replay the decisions under POLICY and predict the effect.",
)
@tls_options
def explain_cmd(
    job: str | None,
    address: str | None,
    dispatch_log: str | None,
    as_json: bool,
    replay_policy: str | None,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Show why each replica of JOB (id or unique prefix) landed where it did, or
    replay a gateway's dispatch decisions (--dispatch-log)."""
    from sage_core.observe.records import JobRecordNotFound, load_record

    if dispatch_log is not None:
        if job or address:
            raise click.UsageError("give JOB or --dispatch-log, not both")
        from sage_core.cli.explain_dispatch import show_dispatch

        show_dispatch(dispatch_log, replay_policy, as_json)
        return
    if not job:
        raise click.UsageError("missing JOB (or --dispatch-log LOG)")
    if (tls_ca_file or tls_cert or tls_key) and not address:
        raise click.UsageError("--tls-* options need --address")
    if address:
        security = security_from("client", tls_ca_file, tls_cert, tls_key)
        record = from_scheduler(address, job, security)
    else:
        try:
            record = load_record(job)
        except JobRecordNotFound as exc:
            raise click.ClickException(str(exc)) from None
    if replay_policy:
        _replay(record, replay_policy, as_json)
        return
    if as_json:
        decisions = [r["placement"] for r in record["plan"]["replicas"]]
        click.echo(json.dumps(decisions, indent=2))
        return
    click.echo(
        f"job {record['job']} ({record.get('status', '?')}): policy "
        f"{record['plan']['policy']}, runtime {record.get('runtime', '?')}, "
        f"priority {record.get('priority', 0)}"
    )
    for d in record.get("admission", []):  # jobs started by the job manager
        verdict = "admitted" if d["admitted"] else "queued"
        click.echo(f"admission ({d['policy']}): {verdict}: {d['reason']}")
    header = ["replica", "worker", "free", "resident", "score", "why"]
    click.echo(table(decision_rows(record), header))
    for r in record.get("recoveries", []):
        click.echo(
            f"re-placed for attempt {r['attempt']} after: {r['cause']}; excluded "
            f"{', '.join(r['excluded']) or 'none'}; restored checkpoint "
            f"{r['restored_epoch'] or 'none (started over)'}"
        )
    for r in record.get("rescales", []):  # job.scale / sage jobs scale
        done = (
            f"added {r['added']} on {r['placement']['worker']}"
            if "added" in r
            else f"retired {r['retired']}"
        )
        click.echo(f"rescaled {r['operator']} {r['from']} -> {r['to']}: {done}")


def _replay(record: dict[str, Any], policy: str, as_json: bool) -> None:
    from sage_core.diagnosis import DiagnosisError, job_model
    from sage_core.diagnosis.replay import replay
    from sage_core.diagnosis.whatif import predict

    try:
        rows = replay(record, policy)
        effect = (
            predict(job_model(record), policy=policy) if record.get("metrics") else None
        )
    except DiagnosisError as exc:
        raise click.ClickException(str(exc)) from None
    predicted = (
        {k: effect[k] for k in ("throughput", "p50_ms", "p99_ms", "validity")}
        if effect
        else None
    )
    if as_json:
        out = {"policy": policy, "decisions": rows, "predicted": predicted}
        click.echo(json.dumps(out, indent=2))
        return
    moved = sum(r["changed"] for r in rows)
    click.echo(
        f"job {record['job']}: {record['plan']['policy']} -> {policy}: "
        f"{moved} of {len(rows)} replicas would move"
    )
    table_rows = [
        [
            r["replica"],
            r["recorded"],
            ("* " if r["changed"] else "  ") + r["replayed"],
            r["reason"],
        ]
        for r in rows
    ]
    click.echo(table(table_rows, ["replica", "recorded", "replayed", "why"]))
    if predicted is None:
        click.echo("no prediction: the record has no run data yet")
        return
    base = effect["baseline"] if effect else {}
    click.echo(
        f"predicted: {predicted['throughput']:.0f} items/s (measured "
        f"{base.get('measured_throughput', 0):.0f}), p99 {predicted['p99_ms']:.2f} ms"
    )
