"""Summary, comparison rows and plots of the emulated mixed-workload experiment."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import pyplot

FIELDS = {
    "embedding_p50_ms": ("embedding", "p50_ms"),
    "embedding_p95_ms": ("embedding", "p95_ms"),
    "embedding_p99_ms": ("embedding", "p99_ms"),
    "llm_p50_ms": ("llm", "p50_ms"),
    "llm_p95_ms": ("llm", "p95_ms"),
    "llm_p99_ms": ("llm", "p99_ms"),
    "embedding_slo": ("embedding", "slo_attainment"),
    "llm_slo": ("llm", "slo_attainment"),
    "slo_attainment": ("slo_attainment",),
    "goodput_rps": ("goodput_rps",),
    "llm_tokens_per_s": ("llm", "tokens_per_s"),
    "failed": ("failed",),
}


def _get(row: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        row = row.get(key) if isinstance(row, dict) else None  # type: ignore[assignment]
    return row


def summarize(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (devices, pattern, mix, load, config): medians over repeats."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        for name, r in p["configs"].items():
            groups[(p["devices"], p["pattern"], p["mix"], p["load"], name)].append(
                {**r, "rate_rps": p["rate_rps"]}
            )
    out = []
    for (n, pattern, mix, load, name), rows in groups.items():
        row: dict[str, Any] = {
            "devices": n,
            "pattern": pattern,
            "mix": mix,
            "load": load,
            "config": name,
            "rate_rps": rows[0]["rate_rps"],
            "repeats": len(rows),
        }
        for key, path in FIELDS.items():
            found = [v for r in rows if (v := _get(r, path)) is not None]
            row[key] = statistics.median(found) if found else None
        out.append(row)
    return out


def comparisons(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each unified configuration against siloed at the same point."""
    base = {
        (r["devices"], r["pattern"], r["mix"], r["load"]): r
        for r in summary
        if r["config"] == "siloed"
    }
    out = []
    for r in summary:
        b = base.get((r["devices"], r["pattern"], r["mix"], r["load"]))
        if r["config"] == "siloed" or b is None:
            continue
        row = {k: r[k] for k in ("devices", "pattern", "mix", "load", "config")}
        ep_u, ep_s = r["embedding_p99_ms"], b["embedding_p99_ms"]
        tp_u, tp_s = r["llm_tokens_per_s"], b["llm_tokens_per_s"]
        row["embedding_p99_reduction"] = 1 - ep_u / ep_s if ep_u and ep_s else None
        row["llm_throughput_ratio"] = tp_u / tp_s if tp_u and tp_s else None
        row["slo_attainment_delta"] = (
            r["slo_attainment"] - b["slo_attainment"]
            if r["slo_attainment"] is not None and b["slo_attainment"] is not None
            else None
        )
        row["goal_met"] = bool(
            row["embedding_p99_reduction"] is not None
            and row["embedding_p99_reduction"] >= 0.4
            and row["llm_throughput_ratio"] is not None
            and abs(row["llm_throughput_ratio"] - 1) <= 0.05
            and (row["slo_attainment_delta"] or 0) > 0
        )
        out.append(row)
    return out


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """Embedding p99 and SLO attainment per mix, one panel per (devices, pattern),
    at the highest load run; bars per configuration."""
    plt = pyplot()

    panels = sorted({(r["devices"], r["pattern"]) for r in summary})
    top = max(r["load"] for r in summary)
    configs = list(
        dict.fromkeys(
            r["config"]
            for r in summary
            if "+" not in r["config"] and "," not in r["config"]
        )
    )
    fig, axes = plt.subplots(
        2, len(panels), figsize=(5 * len(panels), 7), squeeze=False
    )
    for col, (n, pattern) in enumerate(panels):
        rows = [
            r
            for r in summary
            if r["devices"] == n and r["pattern"] == pattern and r["load"] == top
        ]
        mixes = list(dict.fromkeys(r["mix"] for r in rows))
        width = 0.8 / max(1, len(configs))
        # one colour per configuration (the default cycle repeats after ten)
        colours = plt.get_cmap("tab20").colors
        for i, name in enumerate(configs):
            by_mix = {r["mix"]: r for r in rows if r["config"] == name}
            xs = [x + i * width for x in range(len(mixes))]
            for row_i, key in enumerate(("embedding_p99_ms", "slo_attainment")):
                vals = [(by_mix.get(m) or {}).get(key) or 0.0 for m in mixes]
                axes[row_i][col].bar(
                    xs, vals, width, label=name, color=colours[i % len(colours)]
                )
        for row_i, label in enumerate(
            ("embedding p99 (ms, emulated)", "SLO attainment")
        ):
            ax = axes[row_i][col]
            ax.set_xticks(
                [x + width * (len(configs) - 1) / 2 for x in range(len(mixes))], mixes
            )
            ax.set_title(f"{n} devices, {pattern}, load {top}: {label}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("EMULATED devices: siloed vs unified (LLM/embedding mix on x)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def ablation(
    summary: list[dict[str, Any]], at: list[str] | None
) -> list[dict[str, Any]]:
    """Rows of every configuration at the ablation point (pattern, mix share, load),
    per device count, with the deltas against ``hybrid`` measured in the same run."""
    if not at:
        return []
    pattern, share, load = at[0], float(at[1]), float(at[2])
    mix = f"{round(share * 100)}/{round((1 - share) * 100)}"
    rows = [
        r
        for r in summary
        if r["pattern"] == pattern and r["mix"] == mix and r["load"] == load
    ]
    out = []
    for r in rows:
        base = next(
            (
                b
                for b in rows
                if b["devices"] == r["devices"] and b["config"] == "hybrid"
            ),
            None,
        )
        row = {
            k: r[k]
            for k in (
                "devices",
                "config",
                "embedding_p99_ms",
                "llm_p99_ms",
                "slo_attainment",
                "goodput_rps",
                "llm_tokens_per_s",
            )
        }
        if base and base["embedding_p99_ms"] and r["embedding_p99_ms"]:
            row["embedding_p99_vs_hybrid"] = (
                r["embedding_p99_ms"] / base["embedding_p99_ms"]
            )
            row["slo_attainment_vs_hybrid"] = (
                r["slo_attainment"] - base["slo_attainment"]
            )
        out.append(row)
    return out


def best_policy(summary: list[dict[str, Any]], policies: list[str]) -> dict[str, Any]:
    """Mean SLO attainment and goodput of each gateway policy over every point."""
    table = {}
    for name in policies:
        rows = [r for r in summary if r["config"] == name]
        if not rows:
            continue
        table[name] = {
            "mean_slo_attainment": statistics.fmean(
                r["slo_attainment"] or 0 for r in rows
            ),
            "mean_goodput_rps": statistics.fmean(r["goodput_rps"] or 0 for r in rows),
            "mean_embedding_p99_ms": statistics.fmean(
                r["embedding_p99_ms"] or 0 for r in rows
            ),
            "points": len(rows),
        }
    best = max(table, key=lambda n: table[n]["mean_slo_attainment"]) if table else None
    return {"by_policy": table, "best_by_slo_attainment": best}


def main() -> None:
    """Recompute the derived tables and redraw the plot of a results JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    result = json.loads(args.results.read_text())
    summary = summarize(result["points"])
    at = result["config"].get("ablation_at") or ""
    policies = [n for n in dict.fromkeys(r["config"] for r in summary) if n != "siloed"]
    main_policies = ["fifo", "priority", "slo-aware", "hybrid", "interference-aware"]
    result["summary"] = summary
    result["comparisons"] = comparisons(summary)
    result["ablation"] = ablation(summary, at.split(",") if at else None)
    result["policies"] = best_policy(
        summary, [p for p in policies if p in main_policies]
    )
    args.results.write_text(json.dumps(result, indent=2))
    plot(summary, args.results.with_suffix(".png"))


if __name__ == "__main__":
    main()
