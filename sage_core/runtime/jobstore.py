"""The job manager's table on disk: jobs are not forgotten when the scheduler restarts.

Each job of the manager is one JSON file, ``<dir>/<job id>.json`` (written atomically:
a temporary file replaced onto the name), holding its summary (id, name, owner,
priority, status, submitted/started/ended times, error ...), its spec and its log.
The directory is ``<state dir>/manager`` (``sage_core.common.settings.state_dir``,
so ``SAGE_HOME`` moves it) unless Dask's config names one
(``sage.jobs.state-dir``, e.g. ``DASK_SAGE__JOBS__STATE_DIR``): give each scheduler
of one machine its own directory.

A new manager loads the files at start; a job that was ``queued``, ``starting`` or
``running`` then had nobody left to run or follow it, so it is reported ``lost``
with the reason, never silently dropped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_core.common import settings

logger = logging.getLogger(__name__)

#: statuses of a job that a restart interrupts
LIVE = ("queued", "starting", "running")

#: log lines kept per job
LOG_LINES = 500


@dataclass(slots=True)
class ManagedJob:
    """One job of the manager (``summary()`` is what clients see)."""

    id: str
    name: str
    owner: str
    priority: int
    policy: str | None
    status: str = "queued"
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    items: int | None = None
    logs: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    handle: Any = None
    stop_requested: bool = False
    drain_requested: bool = False
    admission: list[dict[str, Any]] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)
    base_dir: str | None = None

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        self.logs.append(f"{stamp} {message}")
        logger.info("job %s: %s", self.id, message)

    def summary(self) -> dict[str, Any]:
        return {
            "job": self.id,
            "name": self.name,
            "owner": self.owner,
            "priority": self.priority,
            "policy": self.policy,
            "status": self.status,
            "submitted": self.submitted,
            "started": self.started,
            "ended": self.ended,
            "error": self.error,
            "items": self.items,
            "admission": list(self.admission),
        }

    def record(self) -> dict[str, Any]:
        """What the job store keeps: the summary, the spec and the log."""
        return {
            **self.summary(),
            "spec": self.spec,
            "base_dir": self.base_dir,
            "logs": list(self.logs),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ManagedJob:
        job = cls(
            id=record["job"],
            name=record.get("name", ""),
            owner=record.get("owner", ""),
            priority=int(record.get("priority", 0)),
            policy=record.get("policy"),
            status=record.get("status", "lost"),
            submitted=record.get("submitted") or 0.0,
            started=record.get("started"),
            ended=record.get("ended"),
            error=record.get("error"),
            items=record.get("items"),
            admission=list(record.get("admission", [])),
            spec=dict(record.get("spec") or {}),
            base_dir=record.get("base_dir"),
        )
        job.logs.extend(record.get("logs", []))
        return job


def store_dir() -> Path:
    """Where the manager keeps its job files (see the module docstring)."""
    import dask

    configured = dask.config.get("sage.jobs.state-dir", None)
    return (
        Path(configured).expanduser()
        if configured
        else settings.state_dir() / "manager"
    )


class JobStore:
    """One JSON file per job under ``folder``."""

    def __init__(self, folder: Path | str | None = None) -> None:
        self.folder = Path(folder) if folder is not None else store_dir()

    def save(self, record: dict[str, Any]) -> None:
        """Write ``record`` (it has a ``job`` id) atomically; a disk error is logged,
        never raised into the job it describes."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{record['job']}.json"
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps(record, default=repr))
            tmp.replace(path)
        except OSError as exc:
            logger.warning("could not save job %s: %s", record.get("job"), exc)

    def load(self) -> list[dict[str, Any]]:
        """Every saved job, oldest first; live ones come back as ``lost`` (and are
        saved so)."""
        if not self.folder.is_dir():
            return []
        records = []
        for path in self.folder.glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                logger.warning("unreadable job file %s skipped: %s", path, exc)
                continue
            if record.get("status") in LIVE:
                was = record["status"]
                record["status"], record["ended"] = "lost", time.time()
                record["error"] = (
                    f"the scheduler restarted while the job was {was}; nothing runs "
                    "or follows it any more (submit it again)"
                )
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                record.setdefault("logs", []).append(f"{stamp} lost: {record['error']}")
                self.save(record)
            records.append(record)
        return sorted(records, key=lambda r: r.get("submitted") or 0.0)
