"""A job's checkpoints and restarts, for whatever runtime drives its replicas.

``JobRecovery`` owns the job's checkpoint store, its restart strategy and the
checkpoint coordinator of the current attempt. The runtime calls ``prepare`` with
the freshly built replicas of an attempt (restoring the last committed checkpoint
when there is one), ``start`` once they run, ``replica_finished`` as each ends,
``restart_delay`` on a failure (None: give up) and ``commit_final`` when the job
succeeded. A restart is global: every replica is rebuilt and restored from the same
checkpoint, and the sources rewind to its offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sage_core.checkpoint.coordinator import CheckpointCoordinator, CheckpointStats
from sage_core.checkpoint.restart import RestartStrategy
from sage_core.checkpoint.storage import (
    Checkpoint,
    CheckpointNotFound,
    CheckpointStore,
)
from sage_core.common import settings as paths
from sage_core.functions import FINAL_EPOCH, SinkFunction
from sage_core.runtime.barriers import final_snapshot, restore
from sage_core.runtime.operators import OperatorFailure

if TYPE_CHECKING:
    from sage_core.compiler.plan import ExecutionPlan
    from sage_core.runtime.worker import ReplicaCore

logger = logging.getLogger(__name__)


def default_checkpoint_dir() -> str:
    """Where checkpoints go without ``checkpoint_dir``: the data directory."""
    return str(paths.data_dir() / "checkpoints")


class JobRecovery:
    """Checkpoints and restarts of one job (see the module docstring).

    Args:
        plan: the job's plan (its settings say interval, directory, strategy).
        job_id: the job; its checkpoints live under ``checkpoint_dir/job_id``.
        resume: restore the job's last committed checkpoint at the first attempt.

    Raises:
        CheckpointDirError: the checkpoint directory is unreachable or unwritable.
        RestartStrategyError: an operator's ``restart`` is malformed.
        CheckpointNotFound: ``resume`` and the job has no usable checkpoint.
    """

    def __init__(
        self, plan: ExecutionPlan, job_id: str, *, resume: bool = False
    ) -> None:
        s = plan.settings
        self.plan, self.job_id = plan, job_id
        self.interval_s = s.checkpoint_interval_s
        self.strategy = RestartStrategy.parse(s.restart)
        self.per_operator = {
            op.name: RestartStrategy.parse(op.options["restart"])
            for op in plan.operators
            if op.options.get("restart") is not None
        }
        self.stats = CheckpointStats()
        self.store: CheckpointStore | None = None
        self._restored: Checkpoint | None = None
        self._coordinator: CheckpointCoordinator | None = None
        self._cores: Mapping[str, ReplicaCore] = {}
        self._failures: dict[str, int] = {}
        self._last_epoch = 0
        if self.interval_s is not None or resume:
            url = s.checkpoint_dir or default_checkpoint_dir()
            self.store = CheckpointStore(url, job_id, retained=s.checkpoints_retained)
            self.store.check()
        if resume:
            assert self.store is not None
            self._restored = self.store.latest()
            if self._restored is None:
                raise CheckpointNotFound(
                    f"job {job_id!r} has no committed checkpoint under "
                    f"{self.store.url!r}; check the job id and checkpoint_dir"
                )

    @property
    def checkpointing(self) -> bool:
        return self.interval_s is not None

    def prepare(self, cores: Mapping[str, ReplicaCore]) -> None:
        """Restore ``cores`` (before ``open()``) and wire their acks."""
        self._cores = cores
        cp = self.restoring()
        if cp is not None and self.store is not None:
            snaps = {r: self.store.load(cp, r) for r in cp.replicas}
            for core in cores.values():
                restore(core, snaps)
                core.epoch = cp.epoch
        coordinator = self.coordinate(cores, self._trigger, self._commit)
        if coordinator is not None:
            for core in cores.values():
                core.on_snapshot = coordinator.ack

    @property
    def restore_epoch(self) -> int | None:
        """The epoch the next attempt restores (None: it starts over)."""
        return self._restored.epoch if self._restored is not None else None

    def restoring(self) -> Checkpoint | None:
        """The checkpoint this attempt restores (None: it starts over); counted."""
        cp = self._restored
        if cp is not None:
            self.stats.restored_epoch = cp.epoch
            self._last_epoch = max(self._last_epoch, cp.epoch)
            logger.info("job %s restores checkpoint %s", self.job_id, cp.epoch)
        return cp

    def coordinate(
        self,
        replicas: Iterable[str],
        trigger: Callable[[int], None],
        on_commit: Callable[[int], None],
    ) -> CheckpointCoordinator | None:
        """This attempt's checkpoint coordinator over ``replicas`` (None: checkpoints
        are off); ``start`` starts it."""
        if not self.checkpointing or self.store is None:
            return None
        assert self.interval_s is not None
        self._coordinator = CheckpointCoordinator(
            self.store,
            self.interval_s,
            replicas,
            trigger=trigger,
            on_commit=on_commit,
            first_epoch=self._last_epoch + 1,
            stats=self.stats,
        )
        return self._coordinator

    def start(self) -> None:
        if self._coordinator is not None:
            self._coordinator.start()

    def stop(self) -> None:
        """Stop the current attempt's checkpoints (a commit under way finishes)."""
        if self._coordinator is not None:
            self._coordinator.stop()
            self._last_epoch = max(self._last_epoch, self._coordinator._next - 1)
            self._coordinator = None

    def replica_finished(self, core: ReplicaCore) -> None:
        """``core`` reached its end of stream: its final snapshot stands for it."""
        if self._coordinator is not None:
            self._coordinator.finished(core.replica, final_snapshot(core))

    def _trigger(self, epoch: int) -> None:
        for core in self._cores.values():
            if core.is_source:
                core.barrier_request = epoch

    def _commit(self, epoch: int) -> None:
        for core in self._cores.values():
            for fn in core.functions:
                if isinstance(fn, SinkFunction):
                    fn.commit(epoch)

    def commit_final(self, cores: Mapping[str, ReplicaCore]) -> None:
        """The job succeeded: publish every sink's remaining output."""
        if self.checkpointing:
            for core in cores.values():
                for fn in core.functions:
                    if isinstance(fn, SinkFunction):
                        fn.commit(FINAL_EPOCH)

    def restart_delay(self, exc: BaseException) -> float | None:
        """Seconds to wait before restarting after ``exc`` (None: fail the job).

        The next attempt restores the last committed checkpoint (or starts over
        when there is none)."""
        op = exc.operator if isinstance(exc, OperatorFailure) else ""
        strategy = self.per_operator.get(op, self.strategy)
        n = self._failures[op] = self._failures.get(op, 0) + 1
        delay = strategy.delay(n)
        if delay is None:
            return None
        self.stats.restarts += 1
        logger.warning(
            "job %s: %s; restart %d of %d in %.1f s from the last checkpoint",
            self.job_id,
            exc,
            n,
            strategy.attempts,
            delay,
        )
        return delay

    def rewind(self) -> None:
        """Before a restart (checkpoints stopped): restore the newest committed
        checkpoint next (none: start over)."""
        self._restored = self.store.latest() if self.store is not None else None

    def metrics(self) -> dict[str, Any]:
        """Checkpoint and restart counters, and the seconds this attempt's replicas
        spent taking snapshots (on their own threads)."""
        out = self.stats.snapshot()
        out["snapshot_s"] = sum(c.metrics_checkpoint_s for c in self._cores.values())
        return out
