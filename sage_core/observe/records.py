"""Job records on disk: what ``sage explain JOB`` reads.

Every submitted job (local or Dask) writes ``<state_dir>/jobs/<job id>.json`` with its
plan (and so every placement decision trace), runtime, policy and final status.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sage_core.common import settings
from sage_core.common.errors import SageError


class JobRecordNotFound(SageError, LookupError):
    """No job record matches the id (or the prefix matches several)."""


def jobs_dir() -> Path:
    return settings.state_dir() / "jobs"


def save_record(record: dict[str, Any]) -> Path:
    """Write (or overwrite) the record of ``record["job"]`` atomically."""
    folder = jobs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['job']}.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, default=repr))
    tmp.replace(path)
    return path


def update_record(job_id: str, **fields: Any) -> None:
    """Merge ``fields`` into a saved record (no-op when it was never saved)."""
    path = jobs_dir() / f"{job_id}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    record.update(fields)
    save_record(record)


#: sampled packet traces kept in a job record (the JSONL file keeps them all)
RECORD_TRACES = 2000


def run_fields(
    duration_s: float, metrics: Mapping[str, Any], traces: list[dict[str, Any]]
) -> dict[str, Any]:
    """What a finished run adds to its record for the diagnosis tools: duration,
    per-replica counters (with their service-time samples) and sampled traces."""
    return {
        "duration_s": duration_s,
        "metrics": {"replicas": dict(metrics.get("replicas", {}))},
        "traces": traces[:RECORD_TRACES],
    }


def load_record(job_id: str) -> dict[str, Any]:
    """The record of ``job_id`` or of the only job whose id starts with it.

    Raises:
        JobRecordNotFound: none or several match.
    """
    folder = jobs_dir()
    exact = folder / f"{job_id}.json"
    if exact.exists():
        return json.loads(exact.read_text())
    hits = sorted(folder.glob(f"{job_id}*.json")) if folder.is_dir() else []
    if len(hits) == 1:
        return json.loads(hits[0].read_text())
    if hits:
        names = ", ".join(h.stem for h in hits[:10])
        raise JobRecordNotFound(f"job id {job_id!r} is ambiguous: {names}")
    known = (
        sorted(p.stem for p in folder.glob("*.json"))[-10:] if folder.is_dir() else []
    )
    raise JobRecordNotFound(
        f"no job record {job_id!r} under {folder}; recent jobs: "
        f"{', '.join(known) or 'none'} (`sage explain --address` asks a scheduler)"
    )
