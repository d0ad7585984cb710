"""Interval join of two keyed streams on event time.

A left item ``l`` and a right item ``r`` with equal keys join when
``l.t + lower <= r.t <= l.t + upper``; each pair comes out once, as
``{"key", "left", "right"}``, whatever order the two inputs arrive in. Each side has a
watermark (its largest event time minus ``max_lateness``); an item below its side's
watermark is late (dropped and counted, or emitted as ``{"key", "late": item,
"side"}`` with ``late="side"``). A stored item is evicted once no on-time item of the
other side can match it any more (its key's buffers are trimmed at each new item
of that key, every key's every 1,024 items), so memory is bounded by the watermarks.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from typing import Any

from sage_core.contract import Contract
from sage_core.functions import CoMapFunction
from sage_plugins.streams.aggregates import StreamConfigError
from sage_plugins.streams.windows import check_late, key_getter

_SIDES = ("left", "right")
#: items between two sweeps of every key's buffers (each new item trims its own key)
_SWEEP_EVERY = 1024


class IntervalJoin(CoMapFunction):
    """Joins left and right items of one key whose times are within
    ``[lower, upper]`` of each other (right time minus left time).

    Config: ``left_key``, ``right_key`` (field names, paths or callables),
    ``lower``, ``upper``, ``time_field`` ("ts"), ``max_lateness`` (0), ``late``
    ("drop" or "side").
    """

    contract = Contract(state="stateful")

    def __init__(
        self,
        *,
        left_key: Any = None,
        right_key: Any = None,
        lower: float = 0.0,
        upper: float = 0.0,
        time_field: str = "ts",
        max_lateness: float = 0.0,
        late: str = "drop",
    ) -> None:
        super().__init__()
        if lower > upper:
            raise StreamConfigError(
                f"interval join needs lower <= upper, got lower={lower} upper={upper}"
            )
        if max_lateness < 0:
            raise StreamConfigError(f"max_lateness must be >= 0, got {max_lateness}")
        self.keys = (key_getter(left_key), key_getter(right_key))
        self.lower, self.upper = float(lower), float(upper)
        self.time_field = time_field
        self.max_lateness = float(max_lateness)
        self.late_mode = check_late(late)
        self.max_ts = [-math.inf, -math.inf]
        self.watermarks = [-math.inf, -math.inf]
        # side -> key -> sorted [(t, seq, item)]
        self.buffers: tuple[dict[Any, list[Any]], dict[Any, list[Any]]] = ({}, {})
        self._seq = 0
        self._since_sweep = 0
        self.late_items = 0
        self.matched = 0

    def _matches(
        self, side: int, key: Any, t: float, item: Any, out: list[Any]
    ) -> None:
        other = self.buffers[1 - side].get(key)
        if not other:
            return
        # a left item matches right times in [t+lower, t+upper]; a right item left
        # times in [t-upper, t-lower]
        lo, hi = (
            (t + self.lower, t + self.upper)
            if side == 0
            else (t - self.upper, t - self.lower)
        )
        i = bisect_left(other, (lo, -1))
        j = bisect_right(other, (hi, math.inf))
        for _, _, o in other[i:j]:
            left, right = (item, o) if side == 0 else (o, item)
            out.append({"key": key, "left": left, "right": right})
        self.matched += j - i

    def _cuts(self) -> tuple[float, float]:
        # left l is useless once l.t + upper < right watermark; right r once
        # r.t - lower < left watermark
        wm_l, wm_r = self.watermarks
        return wm_r - self.upper, wm_l + self.lower

    def _trim(self, side: int, key: Any, cut: float) -> None:
        buf = self.buffers[side]
        items = buf.get(key)
        if not items:
            return
        n = bisect_left(items, (cut, -1))
        if n:
            del items[:n]
            if not items:
                del buf[key]

    def _evict(self) -> None:
        """Trim every key's buffers (keys that get no new items included)."""
        cuts = self._cuts()
        for side in (0, 1):
            for key in list(self.buffers[side]):
                self._trim(side, key, cuts[side])

    def co_map_batch(self, items: list[Any], input_index: int) -> list[Any]:
        side = input_index
        out: list[Any] = []
        key_of, tf = self.keys[side], self.time_field
        buf = self.buffers[side]
        for item in items:
            t = item[tf]
            key = key_of(item)
            if t < self.watermarks[side]:
                self.late_items += 1
                if self.late_mode == "side":
                    out.append({"key": key, "late": item, "side": _SIDES[side]})
                continue
            cuts = self._cuts()
            self._trim(0, key, cuts[0])
            self._trim(1, key, cuts[1])
            self._matches(side, key, t, item, out)
            self._seq += 1
            insort(buf.setdefault(key, []), (t, self._seq, item))
            if t > self.max_ts[side]:
                self.max_ts[side] = t
                self.watermarks[side] = t - self.max_lateness
        self._since_sweep += len(items)
        if self._since_sweep >= _SWEEP_EVERY:  # amortised: keys gone quiet too
            self._since_sweep = 0
            self._evict()
        return out

    def buffered(self) -> int:
        """Items held in memory on both sides."""
        return sum(len(v) for b in self.buffers for v in b.values())

    def get_state(self) -> dict[str, Any]:
        """Buffered items, watermarks and counters (plain data)."""
        return {
            "max_ts": list(self.max_ts),
            "watermarks": list(self.watermarks),
            "buffers": [
                [[k, t, x] for k, v in b.items() for t, _, x in v] for b in self.buffers
            ],
            "late_items": self.late_items,
            "matched": self.matched,
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Continue from a ``get_state()`` snapshot."""
        self.max_ts = list(state["max_ts"])
        self.watermarks = list(state["watermarks"])
        self.late_items, self.matched = state["late_items"], state["matched"]
        self.buffers = ({}, {})
        for side, rows in enumerate(state["buffers"]):
            for key, t, x in rows:
                self._seq += 1
                self.buffers[side].setdefault(key, []).append((t, self._seq, x))
