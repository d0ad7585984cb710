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


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _from_scheduler(address: str, job: str, security: Any) -> dict[str, Any]:
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
@click.argument("job")
@click.option("--address", default=None, help="Ask this scheduler's job board.")
@click.option("--json", "as_json", is_flag=True, help="Print the decisions as JSON.")
@tls_options
def explain_cmd(
    job: str,
    address: str | None,
    as_json: bool,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Show why each replica of JOB (id or unique prefix) landed where it did."""
    from sage_core.observe.records import JobRecordNotFound, load_record

    if (tls_ca_file or tls_cert or tls_key) and not address:
        raise click.UsageError("--tls-* options need --address")
    if address:
        security = security_from("client", tls_ca_file, tls_cert, tls_key)
        record = _from_scheduler(address, job, security)
    else:
        try:
            record = load_record(job)
        except JobRecordNotFound as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        decisions = [r["placement"] for r in record["plan"]["replicas"]]
        click.echo(json.dumps(decisions, indent=2))
        return
    click.echo(
        f"job {record['job']} ({record.get('status', '?')}): policy "
        f"{record['plan']['policy']}, runtime {record.get('runtime', '?')}, "
        f"priority {record.get('priority', 0)}"
    )
    header = ["replica", "worker", "free", "resident", "score", "why"]
    click.echo(_table(decision_rows(record), header))
    for r in record.get("recoveries", []):
        click.echo(
            f"re-placed for attempt {r['attempt']} after: {r['cause']}; excluded "
            f"{', '.join(r['excluded']) or 'none'}; restored checkpoint "
            f"{r['restored_epoch'] or 'none (started over)'}"
        )
