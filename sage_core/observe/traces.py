"""Sampled packet traces: where one micro-batch's time went, hop by hop.

A source replica starts a trace on one packet in ``trace_every``. Each replica that
processes the traced packet adds a hop (operator chain, replica, batch size, transit,
queue wait, service and blocked seconds) and hands the trace on with the first packet
of its outputs; the trace ends at a sink (``outcome: "sink"``) or where no output is
left (``"dropped"``: filtered out or failed). Finished traces go to a ``TraceLog``:
a JSONL file and/or a bounded in-memory list, the input of diagnosis tools.

The parts follow one another, so they add up to the packet's end-to-end time:

* blocked: from the step's end to the packet's hand-over to the transport, its own
  wait for room or credit (``mark_left``, called by whatever hands packets over,
  just before it does); a source's packet has no hop: its wait is the trace's
  ``source_blocked_s``;
* transit: from that hand-over to its entering the next replica's queue:
  serialising, the network, a receiving Dask worker whose event loop is busy;
* queue wait and service at that replica.

Times that span processes are read on the wall clock (``time.time()``), the one
clock the hosts of a cluster share (up to their clock sync); within a hop, on the
monotonic clock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any


def new_trace(trace_id: str, job: str, origin: str) -> dict[str, Any]:
    """A trace started at source replica ``origin`` now."""
    return {
        "trace": trace_id,
        "job": job,
        "origin": origin,
        "start_unix": time.time(),
        #: when the traced packet last left a replica (wall clock; internal)
        "left_unix": time.time(),
        "hops": [],
    }


def mark_left(trace: dict[str, Any], wall: float) -> None:
    """The traced packet is handed to the transport at ``wall`` (``time.time()``):
    the time since its step ended (or since a source made it) was its wait for room
    or credit, added to its last hop's ``blocked_s`` (a source's packet: the trace's
    ``source_blocked_s``); its transit to the next queue starts now."""
    waited = max(0.0, wall - trace["left_unix"])
    if trace["hops"]:
        trace["hops"][-1]["blocked_s"] += waited
    else:
        trace["source_blocked_s"] = trace.get("source_blocked_s", 0.0) + waited
    trace["left_unix"] = wall


def add_hop(
    trace: dict[str, Any],
    *,
    replica: str,
    task: str,
    items: int,
    queue_wait_s: float,
    service_s: float,
    blocked_s: float,
    transit_s: float = 0.0,
) -> None:
    trace["hops"].append(
        {
            "replica": replica,
            "task": task,
            "items": items,
            "transit_s": transit_s,
            "queue_wait_s": queue_wait_s,
            "service_s": service_s,
            "blocked_s": blocked_s,
        }
    )


class TraceLog:
    """Collects finished traces (thread-safe): the latest ``limit`` in memory, all of
    them appended to ``path`` as JSON lines when given."""

    def __init__(self, path: str | None = None, limit: int = 10_000) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: deque[dict[str, Any]] = deque(maxlen=limit)
        self._handle = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def finish(self, trace: dict[str, Any], outcome: str) -> None:
        """Close ``trace`` with its end-to-end time and store it."""
        record = {k: v for k, v in trace.items() if k != "left_unix"}
        record["end_to_end_s"] = max(0.0, time.time() - trace["start_unix"])
        record["outcome"] = outcome
        with self._lock:
            self._records.append(record)
            if self._handle is not None:
                self._handle.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
