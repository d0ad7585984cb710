"""Moving items between replicas: the native bounded queues and stable key hashing.

``BoundedQueue`` is the multi-producer multi-consumer FIFO every operator replica
reads from. Its timeout rules, in one place:

* ``timeout=None`` waits as long as needed, ``timeout=0`` never waits, a positive
  number waits at most that many seconds (the GIL is released while waiting);
  ``inf`` and timeouts of 1e9 s (31 years) or more wait as long as needed too, and
  a NaN or negative timeout raises ``ValueError``;
* ``push``/``pop`` raise ``QueueTimeout`` when the time is up;
* ``push_many`` returns how many items went in (fewer than given only on timeout;
  the rest were not queued), ``pop_many`` returns ``[]`` on timeout;
* after ``close()``, pushes raise ``QueueClosed`` and pops return what is left, then
  raise ``QueueClosed``; ``try_push``/``try_pop`` never wait and raise the same way.

This module and ``sage_core.vector_index`` are the only users of ``_native`` (loaded
through ``sage_core.common.extension``).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sage_core.common.errors import SageError
from sage_core.common.extension import load_extension

if TYPE_CHECKING:
    from sage_core import _native
else:
    _native = load_extension()

__all__ = [
    "BoundedQueue",
    "QueueClosed",
    "QueueStats",
    "QueueTimeout",
    "build_info",
    "key_bytes",
    "stable_hash",
]


class QueueClosed(SageError):
    """The queue is closed: no more pushes, and pops found it drained.

    Attributes:
        pushed: for ``push_many``, how many of the items went in before the close.
    """

    def __init__(self, message: str = "the queue is closed", pushed: int = 0) -> None:
        super().__init__(message)
        self.pushed = pushed


class QueueTimeout(SageError, TimeoutError):
    """``push``/``pop`` waited ``timeout`` seconds and the queue stayed full/empty."""

    def __init__(self, message: str = "queue operation timed out", *_: Any) -> None:
        super().__init__(message)


_native.install_errors({"QueueClosed": QueueClosed, "QueueTimeout": QueueTimeout})


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counters of one queue since it was created (cheap; always on)."""

    pushed: int
    popped: int
    size: int
    capacity: int
    high_watermark: int
    producer_blocks: int
    """How many times a producer found the queue full and waited."""
    consumer_waits: int
    """How many times a consumer found the queue empty and waited."""
    producer_blocked_s: float
    """Seconds producers spent blocked on a full queue (the "blocked" metric)."""
    consumer_wait_s: float
    """Seconds consumers spent waiting on an empty queue (the "queue wait" metric)."""
    closed: bool


class BoundedQueue(_native.BoundedQueue):
    """Bounded multi-producer multi-consumer FIFO of Python objects (native ring).

    Every method is the native one (no Python frame on the hot path); see the module
    docstring for the timeout and close rules. Objects stay in the process: a queue
    is built where it is used and never pickled.

    Example:
        >>> q = BoundedQueue(2)
        >>> q.push_many(["a", "b", "c"], timeout=0)
        2
        >>> q.pop_many(8)
        ['a', 'b']
    """

    def stats(self) -> QueueStats:
        """Counters since creation: totals, high-watermark, blocked and wait time."""
        return QueueStats(**self.counters())

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<BoundedQueue {self.size}/{self.capacity} {state}>"

    def __reduce__(self) -> Any:
        raise TypeError(
            "BoundedQueue lives in one process and cannot be pickled; create it "
            "inside the actor or thread that uses it"
        )


_SUPPORTED = "str, int, float, bytes, bool, None, or tuples of these"


def key_bytes(key: Any) -> bytes:
    """Canonical byte encoding of a routing key.

    Keys that compare equal in Python encode equally (``1``, ``1.0`` and ``True`` are
    one key, as they are one dict key), so keyed state and routing agree.

    Raises:
        TypeError: the key's type has no stable encoding.
    """
    if isinstance(key, str):
        return b"s" + key.encode("utf-8", "surrogatepass")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return b"b" + bytes(key)
    if isinstance(key, numbers.Integral):
        return b"i" + str(int(key)).encode()
    if isinstance(key, numbers.Real):
        value = float(key)
        if value.is_integer():
            return b"i" + str(int(value)).encode()
        return b"f" + value.hex().encode()
    if key is None:
        return b"n"
    if isinstance(key, tuple):
        parts = [key_bytes(part) for part in key]
        return b"t" + b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    raise TypeError(
        f"a routing key of type {type(key).__name__} has no stable hash; "
        f"key_by must produce {_SUPPORTED}"
    )


def stable_hash(key: Any, seed: int = 0) -> int:
    """64-bit hash of ``key`` that is the same in every process and run.

    Python's ``hash()`` of str/bytes is salted per process, so it cannot partition
    keys across workers; this can.
    """
    return int(_native.hash64(key_bytes(key), seed))


def build_info() -> dict[str, str]:
    """How the native extension was built (compiler, instruction set, versions)."""
    return dict(_native.build_info())
