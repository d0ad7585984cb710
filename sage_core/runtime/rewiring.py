"""Markers on a replica's channels, and how a replica's outputs change while the
job runs (mixed into ``ReplicaCore``).

``EndOfStream`` is the last message on a channel from one upstream replica; ``WAKE``
carries no data and only wakes a driver idle on its input queue. ``Rewiring`` queues
changes of the downstream wiring (a replica added or retired by
``compiler.rescale``) for the replica's own driver to apply between steps, so a
step never sees half a wiring; once the replica has sent its end of stream it
refuses them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from sage_core.runtime.outputs import Outbound, Outputs


class EndOfStream:
    """The last message on a channel from one upstream replica."""

    __slots__ = ("channel", "sender")

    def __init__(self, channel: str, sender: str) -> None:
        self.channel, self.sender = channel, sender

    def __repr__(self) -> str:
        return f"EndOfStream({self.channel!r}, {self.sender!r})"


#: a marker a driver's input queue may carry to wake it (queued rewires); no data
WAKE = object()


class Rewiring:
    """The rewire queue of a replica (see the module docstring)."""

    replica: str
    outputs: Outputs

    def _init_rewiring(self) -> None:
        #: changes of the downstream wiring, applied by the driver between steps
        self.rewires: deque[Callable[[], Outbound]] = deque()
        self._rewire_lock = threading.Lock()
        self._ended = False

    def rewire(self, change: Callable[[], Outbound]) -> bool:
        """Queue a change of the outputs for the driver to apply between steps
        (``apply_rewires``); False when this replica already sent its end of
        stream (the change can no longer matter). Any thread may call it."""
        with self._rewire_lock:
            if self._ended:
                return False
            self.rewires.append(change)
            return True

    def apply_rewires(self) -> Outbound:
        """Apply the queued output changes (in the driver, between steps); returns
        the packets they owe (end-of-stream markers to retired replicas)."""
        out: Outbound = []
        while self.rewires:
            out += self.rewires.popleft()()
        return out

    def _end_rewiring(self) -> Outbound:
        """No change is taken from now on (the replica is ending); the queued
        ones are applied now, their packets returned."""
        with self._rewire_lock:
            self._ended = True
        return self.apply_rewires()

    def add_target(self, replica: str, channels: set[str]) -> int:
        """Route ``channels`` to ``replica`` too; its slot (``Outputs.add_target``)."""
        return self.outputs.add_target(replica, channels)

    def retire_target(self, replica: str) -> Outbound:
        """Stop routing to ``replica``; its end-of-stream markers, to send now."""
        return [
            (slot, EndOfStream(channel, self.replica))
            for slot, channel in self.outputs.retire_target(replica)
        ]
