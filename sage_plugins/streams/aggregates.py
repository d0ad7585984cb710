"""Window aggregates: accumulators that add values, merge (session windows) and
give a result.

Each accumulator is plain data (numbers and lists) so a window operator's state
snapshots as JSON-like values. ``percentile`` keeps the window's values (exact);
the others keep O(1) numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sage_core.common.errors import SageError


class StreamConfigError(SageError, ValueError):
    """A window or interval-join operator was configured wrongly."""


def _percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linear interpolation (as
    ``numpy.percentile``'s default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


class Aggregate:
    """How one aggregate starts, adds a value, merges two accumulators and ends."""

    def __init__(
        self,
        start: Callable[[Any], Any],
        add: Callable[[Any, Any], Any],
        merge: Callable[[Any, Any], Any],
        result: Callable[[Any], Any],
    ) -> None:
        self.start, self.add, self.merge, self.result = start, add, merge, result


def _mean_result(acc: list[float]) -> float:
    return acc[0] / acc[1]


def make_aggregate(
    name: str | None,
    *,
    q: float | None = None,
    reduce: Callable[[Any, Any], Any] | None = None,
) -> Aggregate:
    """The aggregate called ``name`` (count, sum, mean, min, max, percentile), or a
    ``reduce(acc, value)`` function (associative and commutative: items arrive out
    of order).

    Raises:
        StreamConfigError: unknown name, both or neither of name/reduce, or a
            percentile without ``q`` in [0, 100].
    """
    if (name is None) == (reduce is None):
        raise StreamConfigError(
            "give exactly one of aggregate=NAME (count, sum, mean, min, max, "
            "percentile) or reduce=FUNCTION"
        )
    if reduce is not None:
        fn = reduce
        return Aggregate(lambda v: v, fn, fn, lambda a: a)
    if name == "count":
        return Aggregate(lambda v: 1, lambda a, v: a + 1, lambda a, b: a + b, int)
    if name == "sum":
        return Aggregate(lambda v: v, lambda a, v: a + v, lambda a, b: a + b, _ident)
    if name == "mean":
        return Aggregate(
            lambda v: [v, 1],
            lambda a, v: [a[0] + v, a[1] + 1],
            lambda a, b: [a[0] + b[0], a[1] + b[1]],
            _mean_result,
        )
    if name in ("min", "max"):
        pick = min if name == "min" else max
        return Aggregate(_ident, pick, pick, _ident)
    if name == "percentile":
        if q is None or not 0 <= q <= 100:
            raise StreamConfigError(
                f"aggregate 'percentile' needs q between 0 and 100 (got {q!r}); "
                f"e.g. .aggregate('percentile', q=95)"
            )
        qq = float(q)
        return Aggregate(
            lambda v: [v],
            _append,
            lambda a, b: a + b,
            lambda a: _percentile(a, qq),
        )
    raise StreamConfigError(
        f"unknown aggregate {name!r}; use count, sum, mean, min, max or percentile "
        f"(or .reduce(fn))"
    )


def _ident(x: Any) -> Any:
    return x


def _append(acc: list[Any], value: Any) -> list[Any]:
    acc.append(value)
    return acc
