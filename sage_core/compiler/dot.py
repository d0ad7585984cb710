"""Graphviz rendering of an ExecutionPlan (``sage plan --dot``)."""

from __future__ import annotations

from sage_core.compiler.plan import ExecutionPlan


def _q(text: str) -> str:
    """A DOT quoted string; a newline in ``text`` becomes DOT's ``\\n`` line break."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def plan_to_dot(plan: ExecutionPlan) -> str:
    """DOT source: one cluster per task, a node per replica (with its worker and
    queue capacity), an arrow per replica-to-replica route labelled by router."""
    lines = [f"digraph {_q(plan.job)} {{", "  rankdir=LR;", "  node [shape=box];"]
    for i, task in enumerate(plan.tasks):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_q(task.name)};")
        for r in plan.replicas_of(task.name):
            cap = f"q={r.queue_capacity}" if r.queue_capacity else "source"
            label = f"{r.id}\n{r.placement.worker} {cap}"
            lines.append(f"    {_q(r.id)} [label={_q(label)}];")
        lines.append("  }")
    for ch in plan.channels:
        label = ch.router if ch.partition == "routed" else "forward"
        if ch.key is not None:
            label += f" key={ch.key.name}"
        if ch.input_index:
            label += f" in={ch.input_index}"
        for src, dsts in ch.routes:
            for dst in dsts:
                lines.append(f"  {_q(src)} -> {_q(dst)} [label={_q(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
