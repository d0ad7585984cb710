"""The job master's side of checkpoints: trigger, collect acks, commit.

Every ``interval_s`` the coordinator starts checkpoint ``n`` (one at a time) by
asking the job to inject barrier ``n`` at its sources. Replicas acknowledge with
their serialised snapshots; a replica that has finished acknowledges every later
checkpoint with its final snapshot. Once every replica acknowledged, the
coordinator's own thread writes the snapshots and then the manifest (the commit), so
storage never stalls a replica, and tells the job (``on_commit``), which lets the
transactional sinks publish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sage_core.checkpoint.storage import CheckpointStore

logger = logging.getLogger(__name__)


@dataclass
class CheckpointStats:
    """Counters of one job's checkpoints (metrics, dashboard)."""

    completed: int = 0
    failed: int = 0
    last_epoch: int = 0
    last_duration_s: float = 0.0
    last_bytes: int = 0
    last_completed_at: float = 0.0
    restarts: int = 0
    restored_epoch: int | None = None

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


class CheckpointCoordinator:
    """Checkpoints of one job attempt (see the module docstring).

    Args:
        store: where checkpoints are written.
        interval_s: seconds between checkpoint starts.
        replicas: every replica id of the plan.
        trigger: called with epoch ``n`` to inject barrier ``n`` at the sources.
        on_commit: called with ``n`` after checkpoint ``n`` is durable.
        first_epoch: the epoch after the restored one (epochs never repeat).
        stats: counters shared across attempts.
    """

    def __init__(
        self,
        store: CheckpointStore,
        interval_s: float,
        replicas: Iterable[str],
        *,
        trigger: Callable[[int], None],
        on_commit: Callable[[int], None],
        first_epoch: int = 1,
        stats: CheckpointStats | None = None,
    ) -> None:
        self.store, self.interval_s = store, interval_s
        self.replicas = set(replicas)
        self.trigger, self.on_commit = trigger, on_commit
        self.stats = stats or CheckpointStats()
        self._next = first_epoch
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopped = False
        self._epoch: int | None = None  # in flight
        self._started = 0.0
        self._acks: dict[str, bytes] = {}
        self._final: dict[str, bytes] = {}
        self._thread = threading.Thread(
            target=self._main, name="sage-checkpoints", daemon=True
        )

    def start(self) -> CheckpointCoordinator:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop triggering; a checkpoint being written finishes first."""
        with self._lock:
            self._stopped = True
            self._wake.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def ack(self, epoch: int, replica: str, blob: bytes) -> None:
        """Replica ``replica`` snapshotted for checkpoint ``epoch``."""
        with self._lock:
            if epoch == self._epoch:
                self._acks[replica] = blob
                self._wake.notify_all()

    def finished(self, replica: str, blob: bytes) -> None:
        """Replica ``replica`` finished; ``blob`` stands for it from now on."""
        with self._lock:
            self._final[replica] = blob
            if self._epoch is not None and replica not in self._acks:
                self._acks[replica] = blob
            self._wake.notify_all()

    def _main(self) -> None:
        last = time.monotonic()
        while True:
            with self._lock:
                while not self._stopped and (
                    (self._epoch is None and time.monotonic() - last < self.interval_s)
                    or (
                        self._epoch is not None and not self.replicas <= set(self._acks)
                    )
                ):
                    timeout = (
                        None
                        if self._epoch is not None
                        else self.interval_s - (time.monotonic() - last)
                    )
                    self._wake.wait(timeout)
                if self._stopped:
                    return
                if self._epoch is None:
                    if self.replicas <= set(self._final):
                        return  # everything finished: the job is ending
                    epoch = self._epoch = self._next
                    self._next += 1
                    self._started = time.monotonic()
                    self._acks = dict(self._final)
                    start = True
                else:
                    epoch, blobs = self._epoch, self._acks
                    start = False
            if start:
                self.trigger(epoch)
                continue
            self._commit(epoch, blobs)
            last = time.monotonic()
            with self._lock:
                self._epoch, self._acks = None, {}

    def _commit(self, epoch: int, blobs: dict[str, bytes]) -> None:
        st = self.stats
        try:
            size = self.store.write(epoch, blobs, {})
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint is counted
            st.failed += 1
            logger.warning(
                "checkpoint %s of job %s failed: %r", epoch, self.store.job_id, exc
            )
            return
        st.completed += 1
        st.last_epoch = epoch
        st.last_bytes = size
        st.last_duration_s = time.monotonic() - self._started
        st.last_completed_at = time.time()
        try:
            self.on_commit(epoch)
        except Exception as exc:  # noqa: BLE001 - a restore publishes it again
            logger.warning(
                "job %s: publishing checkpoint %s failed (%r); a restore from it "
                "publishes it",
                self.store.job_id,
                epoch,
                exc,
            )
