"""SAGE native core: stable hashing, bounded queues and vector indexes."""

from collections.abc import Iterable
from typing import Any

def hash64(data: bytes, seed: int = 0) -> int:
    """
    Stable 64-bit hash of a byte string (FNV-1a + splitmix64 finaliser).

    The value is identical across processes, runs and platforms, unlike Python's
    salted ``hash()``; it is what key-based routing partitions by.
    """

def build_info() -> dict:
    """
    Compiler, target instruction set and version the extension was built with.
    """

def install_errors(types: dict) -> None:
    """
    Install the Python exception classes native errors are raised as.

    Called by sage_core.channels and sage_core.vector_index at import; maps an
    error name (``"QueueClosed"``, ``"IndexFormatError"``, ...) to its class.
    """

class BoundedQueue:
    """
    Bounded multi-producer multi-consumer FIFO of Python objects.

    A ring buffer of fixed capacity. Blocking waits release the GIL;
    ``try_push``/``try_pop`` never block (for async callers).
    """

    def __init__(self, capacity: int) -> None:
        """Create an empty queue holding at most ``capacity`` (>= 1) objects."""

    def try_push(self, obj: object | None) -> bool:
        """
        Append ``obj`` if there is room; return False when full. Never blocks.

        Raises:
            QueueClosed: the queue is closed.
        """

    def try_pop(self) -> tuple[bool, Any]:
        """
        Return ``(True, obj)`` for the oldest object, or ``(False, None)`` when
        empty. Never blocks.

        Raises:
            QueueClosed: the queue is closed and drained.
        """

    def push(self, obj: object | None, timeout: float | None = None) -> None:
        """
        Append ``obj``, waiting (GIL released) while the queue is full.

        Args:
            timeout: seconds to wait; None waits forever, 0 never waits.

        Raises:
            QueueTimeout: still full when the timeout expired.
            QueueClosed: the queue is or became closed.
        """

    def pop(self, timeout: float | None = None) -> Any:
        """
        Remove and return the oldest object, waiting while the queue is empty.

        Raises:
            QueueTimeout: still empty when the timeout expired.
            QueueClosed: the queue is closed and drained.
        """

    def push_many(self, items: Iterable[Any], timeout: float | None = None) -> int:
        """
        Append ``items`` in order, waiting while full; return how many went in.

        Fewer than ``len(items)`` only when the timeout expired (the rest were
        not queued; retry them). ``timeout=0`` pushes what fits now.

        Raises:
            QueueClosed: closed before all were pushed (``.pushed`` counts
                the ones that went in).
        """

    def pop_many(self, max_n: int, timeout: float | None = None) -> list[Any]:
        """
        Remove and return up to ``max_n`` objects, oldest first.

        Returns what is there at once; waits only while the queue is empty, and
        returns ``[]`` if it is still empty when the timeout expires.

        Raises:
            QueueClosed: the queue is closed and drained.
        """

    def close(self) -> None:
        """
        Close the queue and wake every waiter. Pushes then raise QueueClosed;
        pops drain what remains, then raise QueueClosed. Idempotent.
        """

    @property
    def closed(self) -> bool:
        """Whether close() was called."""

    @property
    def size(self) -> int:
        """Number of objects in the queue now."""

    @property
    def capacity(self) -> int:
        """Most objects the queue holds."""

    def counters(self) -> dict:
        """
        Counters since creation: pushed, popped, high_watermark, producer_blocks,
        consumer_waits, producer_blocked_s, consumer_wait_s, size, capacity, closed.
        """
