"""Plain-Python reference versions of the native code, for differential tests.

Slow on purpose: clarity over speed. Never used on a hot path.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np

_MASK = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def mix64(x: int) -> int:
    """splitmix64 finaliser."""
    x &= _MASK
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    x ^= x >> 31
    return x


def hash64(data: bytes, seed: int = 0) -> int:
    """FNV-1a over ``data`` then splitmix64, exactly as ``native/include/sage/hash.hpp``."""
    h = _FNV_OFFSET ^ mix64(seed)
    for byte in data:
        h ^= byte
        h = (h * _FNV_PRIME) & _MASK
    return mix64(h ^ len(data))


# --------------------------------------------------------------------------- queues


class QueueClosed(Exception):
    """Reference twin of ``sage_core.channels.QueueClosed`` (same name, same rules)."""

    def __init__(self, message: str = "the queue is closed", pushed: int = 0) -> None:
        super().__init__(message)
        self.pushed = pushed


class QueueTimeout(Exception):
    """Reference twin of ``sage_core.channels.QueueTimeout``."""


class ReferenceQueue:
    """``collections.deque`` + ``threading.Condition`` model of the native BoundedQueue.

    Same operations, timeout and close rules, and counters (pushed, popped,
    high-watermark); used by the differential tests and as a benchmark peer.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self.closed = False
        self.pushed = 0
        self.popped = 0
        self.high_watermark = 0

    @property
    def size(self) -> int:
        return len(self._items)

    def _deadline(self, timeout: float | None) -> float | None:
        if timeout is None:
            return None
        if not timeout >= 0 or math.isinf(timeout):
            raise ValueError("timeout must be a finite number of seconds >= 0, or None")
        return time.monotonic() + timeout

    def _wait(self, deadline: float | None) -> bool:
        """Wait for a notification; False once the deadline has passed."""
        if deadline is None:
            self._cond.wait()
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._cond.wait(remaining)
        return True

    def _put(self, item: Any) -> None:
        self._items.append(item)
        self.pushed += 1
        self.high_watermark = max(self.high_watermark, len(self._items))

    def try_push(self, obj: Any) -> bool:
        with self._cond:
            if self.closed:
                raise QueueClosed("try_push: the queue is closed")
            if len(self._items) >= self.capacity:
                return False
            self._put(obj)
            self._cond.notify_all()
            return True

    def try_pop(self) -> tuple[bool, Any]:
        with self._cond:
            if self._items:
                self.popped += 1
                self._cond.notify_all()
                return True, self._items.popleft()
            if self.closed:
                raise QueueClosed("try_pop: the queue is closed")
            return False, None

    def push(self, obj: Any, timeout: float | None = None) -> None:
        if self.push_many([obj], timeout) != 1:
            raise QueueTimeout(f"push timed out after {timeout} s")

    def pop(self, timeout: float | None = None) -> Any:
        items = self.pop_many(1, timeout)
        if not items:
            raise QueueTimeout(f"pop timed out after {timeout} s")
        return items[0]

    def push_many(self, items: Iterable[Any], timeout: float | None = None) -> int:
        pending = list(items)
        deadline = self._deadline(timeout)
        done = 0
        with self._cond:
            while True:
                if self.closed:
                    raise QueueClosed("push_many: the queue is closed", done)
                while done < len(pending) and len(self._items) < self.capacity:
                    self._put(pending[done])
                    done += 1
                self._cond.notify_all()
                if done == len(pending) or not self._wait(deadline):
                    return done

    def pop_many(self, max_n: int, timeout: float | None = None) -> list[Any]:
        if max_n < 1:
            raise ValueError("max_n must be at least 1")
        deadline = self._deadline(timeout)
        with self._cond:
            while True:
                if self._items:
                    n = min(max_n, len(self._items))
                    out = [self._items.popleft() for _ in range(n)]
                    self.popped += n
                    self._cond.notify_all()
                    return out
                if self.closed:
                    raise QueueClosed("pop_many: the queue is closed")
                if not self._wait(deadline):
                    return []

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


# --------------------------------------------------------------------------- indexes

MISSING_ID = 2**64 - 1


class ReferenceIndex:
    """Brute-force numpy (float64) model of the vector-index conventions.

    Scores: ip = dot product, cos = cosine, l2 = minus the squared distance (higher
    is more similar); results best first, padded with ``MISSING_ID`` / ``-inf``.
    Duplicate ids raise ValueError, unknown ids KeyError (nothing changed).
    """

    def __init__(self, dim: int, metric: str = "cos") -> None:
        self.dim = dim
        self.metric = metric
        self.vectors: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.vectors)

    def add(self, ids: Iterable[int], vectors: np.ndarray) -> None:
        ids = [int(i) for i in ids]
        if len(set(ids)) != len(ids) or any(i in self.vectors for i in ids):
            raise ValueError("duplicate id")
        for i, v in zip(ids, np.asarray(vectors, dtype=np.float64), strict=True):
            self.vectors[i] = v

    def remove(self, ids: Iterable[int]) -> int:
        ids = {int(i) for i in ids}
        if not ids <= self.vectors.keys():
            raise KeyError("unknown id")
        for i in ids:
            del self.vectors[i]
        return len(ids)

    def scores(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, full score matrix) over every stored vector."""
        ids = np.array(sorted(self.vectors), dtype=np.uint64)
        x = np.array([self.vectors[int(i)] for i in ids]).reshape(len(ids), self.dim)
        q = np.asarray(queries, dtype=np.float64).reshape(-1, self.dim)
        if self.metric == "cos":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
        if self.metric == "l2":
            return ids, -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return ids, q @ x.T

    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: Iterable[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ids, s = self.scores(queries)
        if allowed_ids is not None:
            keep = np.isin(ids, np.asarray(list(allowed_ids), dtype=np.uint64))
            ids, s = ids[keep], s[:, keep]
        m = s.shape[0]
        out_ids = np.full((m, k), MISSING_ID, dtype=np.uint64)
        out_scores = np.full((m, k), -np.inf)
        n = min(k, len(ids))
        order = np.argsort(-s, axis=1, kind="stable")[:, :n]
        out_ids[:, :n] = ids[order]
        out_scores[:, :n] = np.take_along_axis(s, order, axis=1)
        return out_ids, out_scores
