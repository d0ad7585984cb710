"""What ``sage demo`` prints: answers with sources, a stage table, or one JSON document."""

from __future__ import annotations

import json
from typing import Any

import click

from sage_plugins.demo.answerers import EXTRACTIVE, TINY, Answerer

NOTES = {
    EXTRACTIVE: (
        "NOTE: these answers are EXTRACTIVE: the sentences of the retrieved passages "
        "closest to each question (embedding similarity), each with its source [n]; "
        "no model wrote them. For generated answers point the demo at a real server:\n"
        "  sage demo --llm-url http://HOST:8000/v1 --model NAME"
    ),
    TINY: (
        "NOTE: the answers below come from a tiny model with RANDOM weights (it "
        "exercises a real engine offline): they are NOT meaningful. Retrieval is "
        "real. For real answers point the demo at a real server:\n"
        "  sage demo --llm-url http://HOST:8000/v1 --model NAME"
    ),
}
LABELS = {EXTRACTIVE: "A (extractive)", TINY: "A (random-weight model)"}


def stage_table(metrics: dict[str, Any]) -> list[str]:
    """Rows of per-item service, queue-wait and blocked time of each operator."""
    header = f"{'stage':<12}{'items':>7}{'service ms':>12}{'queue-wait ms':>15}"
    rows = [header + f"{'blocked ms':>12}"]
    for name, m in metrics["operators"].items():
        n = max(m["items_in"], m["items_out"], 1)
        rows.append(
            f"{name:<12}{m['items_in'] or m['items_out']:>7}"
            f"{1000 * m['service_s'] / n:>12.2f}{1000 * m['queue_wait_s'] / n:>15.2f}"
            f"{1000 * m['blocked_s'] / n:>12.2f}"
        )
    return rows


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return known[len(known) // 2] if known else None


def report(
    result: Any, chunks: int, indexed_s: float, chosen: Answerer, as_json: bool
) -> None:
    """Print the demo's answers, sources and timings (or one JSON document)."""
    answers = sorted(result.collected(), key=lambda a: a["query"])
    timings = [a["generation"] for a in answers]
    summary = {
        "answerer": chosen.kind,
        "meaningful_answers": chosen.meaningful,
        "chunks_indexed": chunks,
        "index_s": round(indexed_s, 3),
        "questions": len(answers),
        "answer_s": round(result.duration_s, 3),
        "ttft_p50_s": _median([t["ttft_s"] for t in timings]),
        "tbt_p50_s": _median([t["tbt_s"] for t in timings]),
        "latency_p50_s": _median([t["latency_s"] for t in timings]),
        "dead_letters": len(result.dead_letters),
    }
    if as_json:
        payload = {
            "summary": summary,
            "answers": [
                {
                    "query": a["query"],
                    "answer": a["answer"],
                    "sources": [c["id"] for c in a["contexts"]],
                    "generation": a["generation"],
                    "refine": a["refine"],
                }
                for a in answers
            ],
            "stages": result.metrics["operators"],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    note = NOTES.get(chosen.kind)
    if note:
        click.secho(note, fg="yellow", err=True)
    label = LABELS.get(chosen.kind, "A")
    for a in answers:
        click.echo(f"\nQ: {a['query']}")
        text = " ".join(a["answer"].split()) or "(nothing in the retrieved passages)"
        click.echo(f"{label}: {text}")
        for n, c in enumerate(a["contexts"], start=1):
            meta = c.get("meta", {})
            where = f"{meta.get('source', '?')} — {meta.get('section', '')}".strip()
            click.echo(f"   [{n}] {where} ({c['id']}, score {c['score']:.3f})")
        g = a["generation"]
        ttft = f"{1000 * g['ttft_s']:.0f} ms" if g["ttft_s"] is not None else "n/a"
        click.echo(
            f"   {g['completion_tokens']} tokens, TTFT {ttft}, total "
            f"{1000 * g['latency_s']:.0f} ms; context {a['refine']['rate']:.0%} of "
            f"{a['refine']['tokens_in']} tokens"
        )
    click.echo("\nPer-stage latency (per item; queue-wait/service/blocked):")
    for row in stage_table(result.metrics):
        click.echo("  " + row)
    click.echo(
        f"\nIndexed {chunks} chunks in {indexed_s:.1f} s; answered {len(answers)} "
        f"questions in {result.duration_s:.1f} s ({chosen.kind} answers)"
    )
    if chosen.kind == TINY:
        click.secho(
            "NOTE: the answers above come from a random-weight model and are not "
            "meaningful; use --llm-url for a real one.",
            fg="yellow",
            err=True,
        )
