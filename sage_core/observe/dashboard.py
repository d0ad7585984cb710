"""The SAGE page of the Dask dashboard: ``/sage`` (HTML) and ``/sage/api/jobs`` (JSON);
``/sage/`` redirects to ``/sage``.

The page lists jobs (status, policy, priority), names the selected job's bottleneck
and the first fixes ``sage diagnose`` would recommend (``observe.verdict``, every 5
s), draws its plan as a graph (tasks in topological columns, channels with their
router) and shows, per replica, its worker, input queue depth, items/s, p50/p99
service time per item and the time it was blocked by backpressure. It refreshes itself every second from the
JSON route, which reads the scheduler's ``sage-jobs`` board.
"""

from __future__ import annotations

import html
import json
from typing import Any

from distributed.http.utils import RequestHandler

from sage_core.observe.histogram import quantile
from sage_core.observe.jobboard import board_of
from sage_core.observe.verdict import DiagnosisAPI


def replica_rows(job: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per replica of a job, in plan order."""
    plan = job.get("plan") or {}
    order = [r["id"] for r in plan.get("replicas", [])]
    snaps = job.get("replicas", {})
    placement = job.get("placement", {})
    rows = []
    for rid in order or sorted(snaps):
        s = snaps.get(rid, {})
        queue = s.get("queue") or {}
        hist = s.get("service_hist")
        p50 = quantile(hist, 0.5) if hist else None
        p99 = quantile(hist, 0.99) if hist else None
        rows.append(
            {
                "replica": rid,
                "task": s.get("task", rid.split("#")[0]),
                "worker": s.get("worker") or placement.get(rid, {}).get("worker", ""),
                "state": s.get("state", "starting"),
                "queue_depth": queue.get("depth"),
                "queue_capacity": queue.get("capacity"),
                "items_in": s.get("items_in", 0),
                "items_out": s.get("items_out", 0),
                "items_per_s": s.get("items_per_s", 0.0),
                "service_p50_ms": None if p50 is None else p50 * 1e3,
                "service_p99_ms": None if p99 is None else p99 * 1e3,
                "blocked_s": s.get("blocked_s", 0.0),
            }
        )
    return rows


def plan_svg(plan: dict[str, Any]) -> str:
    """The plan's tasks and channels as an SVG drawing (columns by depth)."""
    tasks = [t["name"] for t in plan.get("tasks", [])]
    par = {t["name"]: t["parallelism"] for t in plan.get("tasks", [])}
    edges = [
        (c["src_task"], c["dst_task"], c["router"], c["partition"])
        for c in plan.get("channels", [])
    ]
    depth = dict.fromkeys(tasks, 0)
    for _ in tasks:  # longest path from a source, enough rounds for any DAG
        for src, dst, _r, _p in edges:
            depth[dst] = max(depth[dst], depth[src] + 1)
    columns: dict[int, list[str]] = {}
    for t in tasks:
        columns.setdefault(depth[t], []).append(t)
    w, h, gx, gy = 190, 46, 70, 24
    pos = {
        t: (20 + d * (w + gx), 20 + i * (h + gy))
        for d, col in columns.items()
        for i, t in enumerate(col)
    }
    width = 40 + (max(columns, default=0) + 1) * (w + gx)
    height = 40 + max((len(c) for c in columns.values()), default=1) * (h + gy)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plan" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
    )
    parts = [head]
    for src, dst, router, partition in edges:
        x1, y1 = pos[src][0] + w, pos[src][1] + h / 2
        x2, y2 = pos[dst][0], pos[dst][1] + h / 2
        label = "forward" if partition == "forward" else router
        parts.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#777" '
            f'marker-end="url(#arrow)"/><text x="{(x1 + x2) / 2}" '
            f'y="{(y1 + y2) / 2 - 4}" font-size="10" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
    for t, (x, y) in pos.items():
        name = t if len(t) <= 26 else t[:24] + "…"
        parts.append(
            f'<g class="task"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" '
            f'fill="#e8f0fe" stroke="#3367d6"/><text x="{x + 8}" y="{y + 19}" '
            f'font-size="12">{html.escape(name)}</text><text x="{x + 8}" '
            f'y="{y + 36}" font-size="11" fill="#555">x{par[t]}</text></g>'
        )
    parts.insert(
        1,
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#777"/></marker></defs>',
    )
    parts.append("</svg>")
    return "".join(parts)


def jobs_payload(board: Any) -> dict[str, Any]:
    """What ``/sage/api/jobs`` returns: every job, newest first, with replica rows
    and the plan drawing."""
    if board is None:
        return {"jobs": [], "board": False}
    jobs = []
    for job in reversed(list(board.jobs.values())):
        jobs.append(
            {
                "job": job["job"],
                "name": job.get("name", ""),
                "owner": job.get("owner", ""),
                "status": job.get("status", ""),
                "policy": job.get("policy", ""),
                "priority": job.get("priority", 0),
                "submitted": job.get("submitted"),
                "error": job.get("error"),
                "replicas": replica_rows(job),
                "graph": plan_svg(job.get("plan") or {}),
                "checkpoints": job.get("checkpoints"),
            }
        )
    return {"jobs": jobs, "board": True}


class JobsAPI(RequestHandler):
    """``GET /sage/api/jobs``: the jobs on the scheduler's board as JSON."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(jobs_payload(board_of(self.server)), default=repr))


class SagePage(RequestHandler):
    """``GET /sage``: the live SAGE page."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(PAGE)


class SageSlash(RequestHandler):
    """``GET /sage/``: a redirect to ``/sage`` (the page's links are relative)."""

    def get(self) -> None:
        self.redirect(self.request.path.rstrip("/"), permanent=True)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>SAGE jobs</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right} th{background:#f3f3f3} td.l,th.l{text-align:left}
tr.sel{background:#fff6d5} tr.job{cursor:pointer} .failed{color:#b00020}
.running{color:#1a73e8} .succeeded{color:#188038} #updated{color:#777;font-size:12px}
nav a{margin-right:12px} .panel{font-size:13px;margin:6px 0;max-width:70em}
.panel ol{margin:2px 0 0;padding-left:20px} .muted{color:#777}
</style></head><body>
<nav><a href="status">Dask status</a><a href="workers">Workers</a>
<a href="metrics">Prometheus</a></nav>
<h1>SAGE jobs</h1><div id="updated">loading…</div>
<table id="jobs"><thead><tr><th class="l">job</th><th class="l">name</th>
<th class="l">owner</th><th class="l">status</th><th class="l">policy</th><th>priority</th>
<th>replicas</th><th class="l">error</th></tr></thead><tbody></tbody></table>
<h2 id="title"></h2><div id="checkpoints"></div>
<div id="diagnosis" class="panel"></div><div id="graph"></div>
<table id="replicas"><thead><tr><th class="l">replica</th><th class="l">worker</th>
<th class="l">state</th><th>queue depth</th><th>items in</th><th>items out</th>
<th>items/s</th><th>p50 service (ms)</th><th>p99 service (ms)</th>
<th>blocked (s)</th></tr></thead><tbody></tbody></table>
<script>
let selected = null;
const esc = s => String(s ?? "").replace(/[&<>"]/g,
  c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
const num = (v, d) => v === null || v === undefined ? "-" : Number(v).toFixed(d);
function render(data) {
  const jobs = data.jobs;
  if (!selected || !jobs.some(j => j.job === selected)) {
    const run = jobs.find(j => j.status === "running");
    selected = run ? run.job : (jobs[0] ? jobs[0].job : null);
  }
  document.querySelector("#jobs tbody").innerHTML = jobs.map(j =>
    `<tr class="job${j.job === selected ? " sel" : ""}" data-job="${esc(j.job)}">
     <td class="l">${esc(j.job)}</td><td class="l">${esc(j.name)}</td>
     <td class="l">${esc(j.owner)}</td>
     <td class="l ${esc(j.status)}">${esc(j.status)}</td><td class="l">${esc(j.policy)}
     </td><td>${j.priority}</td><td>${j.replicas.length}</td>
     <td class="l failed">${esc(j.error)}</td></tr>`).join("") ||
    '<tr><td class="l" colspan="7">no SAGE jobs yet</td></tr>';
  document.querySelectorAll("tr.job").forEach(tr =>
    tr.onclick = () => { selected = tr.dataset.job; refresh(); });
  const job = jobs.find(j => j.job === selected);
  document.getElementById("title").textContent = job ?
    `${job.job} (${job.status})` : "";
  document.getElementById("graph").innerHTML = job ? job.graph : "";
  const c = job && job.checkpoints;
  document.getElementById("checkpoints").textContent = c ?
    `checkpoints: ${c.completed} completed, ${c.failed} failed; last #${c.last_epoch}` +
    ` in ${num(c.last_duration_s, 3)} s, ${c.last_bytes} bytes; restarts ${c.restarts}`
    : "";
  document.querySelector("#replicas tbody").innerHTML = job ? job.replicas.map(r =>
    `<tr class="replica"><td class="l">${esc(r.replica)}</td>
     <td class="l">${esc(r.worker)}</td><td class="l">${esc(r.state)}</td>
     <td>${r.queue_depth === null || r.queue_depth === undefined ? "-" :
       r.queue_depth + " / " + r.queue_capacity}</td><td>${r.items_in}</td>
     <td>${r.items_out}</td><td>${num(r.items_per_s, 0)}</td>
     <td>${num(r.service_p50_ms, 3)}</td><td>${num(r.service_p99_ms, 3)}</td>
     <td>${num(r.blocked_s, 2)}</td></tr>`).join("") : "";
  document.getElementById("updated").textContent =
    "updated " + new Date().toLocaleTimeString() + " · " + jobs.length + " job(s)";
}
function renderDiagnosis(d) {
  const el = document.getElementById("diagnosis");
  if (!d || d.job !== selected && !String(d.job).startsWith(selected)) return;
  if (d.error) { el.innerHTML = `<span class="muted">diagnosis: ${esc(d.error)}</span>`;
    return; }
  const b = d.bottleneck, ev = Object.entries(b.evidence || {}).map(([k, v]) =>
    `${esc(k)} ${typeof v === "number" ? num(v, 3) : esc(JSON.stringify(v))}`);
  el.innerHTML = `<b>bottleneck: ${esc(b.operator)} (${esc(b["class"])})</b>
    <span class="muted">${ev.join(", ")}</span><ol>` + d.recommendations.map(r =>
    `<li>${esc(r.action)}: predicted ${num(r.predicted.throughput, 0)} items/s,
     p99 ${num(r.predicted.p99_ms, 2)} ms</li>`).join("") + "</ol>";
}
let diagnosed = null, diagnosedAt = 0;
function diagnose() {
  if (!selected) { document.getElementById("diagnosis").innerHTML = ""; return; }
  if (selected === diagnosed && Date.now() - diagnosedAt < 5000) return;
  diagnosed = selected; diagnosedAt = Date.now();
  fetch("sage/api/diagnosis?job=" + encodeURIComponent(selected))
    .then(r => r.json()).then(renderDiagnosis).catch(() => {});
}
function refresh() {
  fetch("sage/api/jobs").then(r => r.json()).then(render).then(diagnose).catch(e =>
    document.getElementById("updated").textContent = "cannot reach the scheduler: " + e);
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""

ROUTES: list[tuple[str, Any]] = [
    ("/sage", SagePage),
    ("/sage/", SageSlash),
    ("/sage/api/jobs", JobsAPI),
    ("/sage/api/diagnosis", DiagnosisAPI),
]
