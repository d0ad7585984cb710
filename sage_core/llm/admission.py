"""Admission: bounded queues per request class and optional per-API-key rate limits.

A request is admitted only while its class has fewer than ``queue_limits[cls]``
requests waiting; beyond that it is refused with 429 and a ``Retry-After`` estimated
from the recent dispatch rate. Nothing queues without bound: memory under overload is
the queue limits times the request size. Rate limits are token buckets per API key.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from sage_core.llm.classify import CLASSES
from sage_core.llm.errors import ConfigError, OverloadedError

DEFAULT_QUEUE_LIMITS = {"chat": 256, "completion": 256, "embedding": 1024}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Token bucket: ``requests_per_s`` sustained, ``burst`` at once."""

    requests_per_s: float
    burst: int

    def __post_init__(self) -> None:
        if self.requests_per_s <= 0 or self.burst < 1:
            raise ConfigError("rate_limit: requests_per_s must be > 0 and burst >= 1")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class Admission:
    """Per-class queue accounting and rate limiting.

    Attributes:
        queue_limits: class -> most requests waiting at once.
        rate_limit: per-API-key bucket, or None.
        max_keys: buckets kept at most (least recently used ones are forgotten).
    """

    queue_limits: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_QUEUE_LIMITS)
    )
    rate_limit: RateLimit | None = None
    max_keys: int = 10_000
    waiting: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _dispatches: deque[float] = field(default_factory=lambda: deque(maxlen=256))

    def __post_init__(self) -> None:
        limits = dict(DEFAULT_QUEUE_LIMITS)
        for cls, limit in self.queue_limits.items():
            if cls not in CLASSES:
                raise ConfigError(
                    f"queue limit for unknown class {cls!r}; classes: {', '.join(CLASSES)}"
                )
            if not isinstance(limit, int) or limit < 1:
                raise ConfigError(f"queue limit of {cls} must be an integer >= 1")
            limits[cls] = limit
        self.queue_limits = limits

    def retry_after(self, cls: str) -> int:
        """Seconds until the class queue has likely drained, from the recent dispatch
        rate (1..60)."""
        now = time.monotonic()
        recent = [t for t in self._dispatches if t >= now - 10.0]
        rate = len(recent) / 10.0
        if rate <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self.waiting[cls] / rate))))

    def admit(self, cls: str, api_key: str | None) -> None:
        """Count one more waiting request of ``cls``.

        Raises:
            OverloadedError: the class queue is full, or the key is over its rate.
        """
        if self.rate_limit is not None:
            self._take_token(api_key or "")
        limit = self.queue_limits[cls]
        if self.waiting[cls] >= limit:
            raise OverloadedError(
                f"the {cls} queue is full ({limit} waiting); retry later",
                retry_after_s=self.retry_after(cls),
                code="queue_full",
            )
        self.waiting[cls] += 1

    def left_queue(self, cls: str, dispatched: bool) -> None:
        """A waiting request was dispatched (or cancelled / timed out)."""
        self.waiting[cls] -= 1
        if dispatched:
            self._dispatches.append(time.monotonic())

    def _take_token(self, key: str) -> None:
        assert self.rate_limit is not None
        limit = self.rate_limit
        now = time.monotonic()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(limit.burst), now)
            if len(self._buckets) >= self.max_keys:
                self._buckets.pop(next(iter(self._buckets)))
        bucket.tokens = min(
            float(limit.burst),
            bucket.tokens + (now - bucket.stamp) * limit.requests_per_s,
        )
        bucket.stamp = now
        self._buckets[key] = bucket  # re-insert: dict order is recency order
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / limit.requests_per_s
            raise OverloadedError(
                f"rate limit of {limit.requests_per_s:g} requests/s "
                f"(burst {limit.burst}) exceeded for this API key",
                retry_after_s=max(1, math.ceil(wait)),
                code="rate_limited",
            )
        bucket.tokens -= 1.0
