"""Checkpoints: durable storage, managed keyed state, restart strategies.

The runtime side (barriers, alignment, restore) is ``sage_core.runtime.barriers``
and ``sage_core.runtime.recovery``.
"""

from __future__ import annotations

from sage_core.checkpoint.restart import RestartStrategy, RestartStrategyError
from sage_core.checkpoint.storage import (
    Checkpoint,
    CheckpointDirError,
    CheckpointMismatch,
    CheckpointNotFound,
    CheckpointStore,
)

__all__ = [
    "Checkpoint",
    "CheckpointDirError",
    "CheckpointMismatch",
    "CheckpointNotFound",
    "CheckpointStore",
    "RestartStrategy",
    "RestartStrategyError",
]
