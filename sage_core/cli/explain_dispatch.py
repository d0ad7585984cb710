"""``sage explain --dispatch-log LOG [--replay POLICY]``: a gateway's dispatch
decisions replayed under a request policy (``sage_core.diagnosis.dispatch``)."""

from __future__ import annotations

import json
from typing import Any

import click

from sage_core.cli.explain import table

#: decisions printed as a table (all of them with --json)
SHOWN = 40


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _who(d: dict[str, Any] | None) -> str:
    return "-" if d is None else f"{d['engine']}: {', '.join(d['requests'])}"


def show_dispatch(path: str, policy: str | None, as_json: bool) -> None:
    """Print the replay of the decision log at ``path`` under ``policy`` (the
    recorded one when None: the check of the replay against the recording)."""
    from sage_core.diagnosis import DiagnosisError
    from sage_core.diagnosis.dispatch import replay_dispatch

    try:
        out = replay_dispatch(path, policy)
    except DiagnosisError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    was, new = out["recorded_policy"], out["policy"]
    click.echo(
        f"{path}: {out['requests']} requests served ({out['left_out']} left out: "
        f"never served to the end); {was} -> {new}"
    )
    rows = []
    for kind, c in {**out["classes"], **out["priorities"]}.items():
        cols = (c["recorded"], c["replayed_recorded_policy"], c["replayed"])
        rows.append(
            [
                kind,
                str(c["recorded"]["requests"]),
                " / ".join(_ms(x["wait_p50_ms"]) for x in cols),
                " / ".join(_ms(x["wait_p99_ms"]) for x in cols),
                " / ".join(_share(x["slo_attainment"]) for x in cols),
            ]
        )
    for switch in out["policy_switches"]:
        click.echo(
            f"note: the gateway switched to {switch['policy']} at t={switch['t']:.1f} "
            f"s; the replay of {was} assumes it ran throughout"
        )
    what = f"(recorded / replayed {was} / replayed {new})"
    header = ["class", "requests", f"wait p50 ms {what}", "wait p99 ms", "SLO met"]
    click.echo(table(rows, header))
    decisions = out["decisions"]
    changed = sum(d["changed"] for d in decisions)
    click.echo(f"{changed} of {len(decisions)} dispatch decisions differ")
    shown = [
        [
            str(d["k"]),
            _who(d["recorded"]),
            ("* " if d["changed"] else "  ") + _who(d["replayed"]),
        ]
        for d in decisions[:SHOWN]
    ]
    click.echo(table(shown, ["#", "recorded", f"replayed ({new})"]))
    if len(decisions) > SHOWN:
        click.echo(f"... {len(decisions) - SHOWN} more (--json shows all)")
