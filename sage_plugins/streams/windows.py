"""Event-time windows over a keyed stream: tumbling, sliding and session windows.

Time is the item's ``time_field`` (a number, e.g. seconds). Each replica keeps a
**watermark**: the largest event time it has seen minus ``max_lateness`` (bounded
out-of-orderness). A window ``[start, end)`` fires once the watermark reaches
``end``; an item whose time is below the watermark is **late**: it is dropped and
counted (``late="drop"``) or emitted as ``{"key", "late": item, "watermark"}``
(``late="side"``; ``WindowedStream.aggregate(..., late="side")`` splits those into a
second stream). Tumbling ``size=10`` windows are ``[10n, 10n + 10)``; sliding windows
start at multiples of ``slide``; a session is a run of items less than ``gap`` apart,
``[first, last + gap)``.

Results are ``{"key", "window_start", "window_end", "value"}``, in order of window
end. Memory is bounded by the watermark: fired windows are gone. The whole state
(open windows, watermark, counters) is ``get_state()`` and comes back with
``restore_state()``. ``flush()`` fires every open window; the runtime calls it through
``end_of_input()`` when a finite input ends.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any, Literal

from sage_core.contract import Contract
from sage_core.functions import FlatMapFunction
from sage_core.graph.refs import key_spec, load_path
from sage_core.runtime.operators import key_function
from sage_plugins.streams.aggregates import Aggregate, StreamConfigError, make_aggregate

LateMode = Literal["drop", "side"]


def resolve_callable(ref: Any, what: str) -> Callable[..., Any]:
    """A callable given as itself or as a ``"pkg.mod:fn"`` path.

    Raises:
        StreamConfigError: neither.
    """
    if isinstance(ref, str) and ":" in ref:
        obj = load_path(ref)
        if callable(obj):
            return obj  # type: ignore[no-any-return]
    if callable(ref):
        return ref  # type: ignore[no-any-return]
    raise StreamConfigError(f"{what} must be a callable or a 'pkg.mod:fn' path")


def key_getter(key: Any) -> Callable[[Any], Any]:
    """The key function of a ``key`` config (field name, path or callable)."""
    if key is None:
        raise StreamConfigError(
            "windows and interval joins need key= (a field name, 'pkg.mod:fn' or a "
            "callable); the DSL passes the stream's key_by"
        )
    return key_function(key_spec(key))


def check_late(late: str) -> LateMode:
    if late not in ("drop", "side"):
        raise StreamConfigError(f"late must be 'drop' or 'side', got {late!r}")
    return late  # type: ignore[return-value]


def window_kind(size: float | None, slide: float | None, gap: float | None) -> str:
    """``"tumbling"``, ``"sliding"`` or ``"session"`` for a window config.

    Raises:
        StreamConfigError: a contradictory or non-positive combination.
    """
    if gap is not None:
        if size is not None or slide is not None:
            raise StreamConfigError(
                "a session window takes gap= only (not size=/slide=)"
            )
        if gap <= 0:
            raise StreamConfigError(f"gap must be > 0, got {gap}")
        return "session"
    if size is None or size <= 0:
        raise StreamConfigError(
            f"give size= > 0 (tumbling/sliding) or gap= > 0 (session); got size={size}"
        )
    if slide is None or slide == size:
        return "tumbling"
    if slide <= 0:
        raise StreamConfigError(f"slide must be > 0, got {slide}")
    return "sliding"


class Window(FlatMapFunction):
    """Event-time window aggregate per key (tumbling, sliding or session).

    Config: ``key``, ``size`` / ``slide`` / ``gap``, ``time_field`` ("ts"),
    ``max_lateness`` (0), ``aggregate`` (count, sum, mean, min, max, percentile with
    ``q``) or ``reduce`` (a function or path), ``value_field`` (the item itself when
    unset), ``late`` ("drop" or "side").
    """

    contract = Contract(state="stateful")

    def __init__(
        self,
        *,
        key: Any = None,
        size: float | None = None,
        slide: float | None = None,
        gap: float | None = None,
        time_field: str = "ts",
        max_lateness: float = 0.0,
        aggregate: str | None = None,
        q: float | None = None,
        reduce: Any = None,
        value_field: str | None = None,
        late: str = "drop",
    ) -> None:
        super().__init__()
        self.kind = window_kind(size, slide, gap)
        if max_lateness < 0:
            raise StreamConfigError(f"max_lateness must be >= 0, got {max_lateness}")
        fn = resolve_callable(reduce, "reduce") if reduce is not None else None
        self.agg: Aggregate = make_aggregate(aggregate, q=q, reduce=fn)
        self.key_of = key_getter(key)
        self.size = float(size) if size is not None else 0.0
        self.slide = float(slide) if slide is not None else self.size
        self.gap = float(gap) if gap is not None else 0.0
        self.time_field, self.value_field = time_field, value_field
        self.max_lateness = float(max_lateness)
        self.late_mode = check_late(late)
        self.watermark = -math.inf
        self.max_ts = -math.inf
        # key -> {(start, end): acc} (tumbling/sliding) or [[start, end, acc]] (session)
        self.open_windows: dict[Any, Any] = {}
        self._due: list[tuple[float, float, int, Any]] = []  # (end, start, seq, key)
        self._seq = 0
        self.late_items = 0
        self.fired = 0

    # -- assigning -------------------------------------------------------------

    def _starts(self, t: float) -> list[float]:
        if self.kind == "tumbling":
            return [math.floor(t / self.size) * self.size]
        last = math.floor(t / self.slide) * self.slide
        starts = []
        s = last
        while s > t - self.size:
            starts.append(s)
            s -= self.slide
        return starts[::-1]

    def _schedule(self, end: float, start: float, key: Any) -> None:
        self._seq += 1
        heapq.heappush(self._due, (end, start, self._seq, key))

    def _add_fixed(self, key: Any, t: float, value: Any) -> None:
        wins = self.open_windows.setdefault(key, {})
        agg = self.agg
        for start in self._starts(t):
            w = (start, start + self.size)
            if w in wins:
                wins[w] = agg.add(wins[w], value)
            else:
                wins[w] = agg.start(value)
                self._schedule(w[1], start, key)

    def _add_session(self, key: Any, t: float, value: Any) -> None:
        sessions: list[list[Any]] = self.open_windows.setdefault(key, [])
        start, end, acc = t, t + self.gap, self.agg.start(value)
        keep = []
        for s in sessions:
            if s[0] < end and start < s[1]:  # overlaps: merge
                start, end = min(start, s[0]), max(end, s[1])
                acc = self.agg.merge(s[2], acc)
            else:
                keep.append(s)
        keep.append([start, end, acc])
        self.open_windows[key] = keep
        self._schedule(end, start, key)

    # -- firing ----------------------------------------------------------------

    def _result(self, key: Any, start: float, end: float, acc: Any) -> dict[str, Any]:
        self.fired += 1
        return {
            "key": key,
            "window_start": start,
            "window_end": end,
            "value": self.agg.result(acc),
        }

    def _fire(self, watermark: float, out: list[Any]) -> None:
        due = self._due
        while due and due[0][0] <= watermark:
            end, start, _, key = heapq.heappop(due)
            wins = self.open_windows.get(key)
            if wins is None:
                continue
            if self.kind == "session":
                hit = next((s for s in wins if s[0] == start and s[1] == end), None)
                if hit is None:  # merged into a later session since
                    continue
                wins.remove(hit)
                out.append(self._result(key, start, end, hit[2]))
            else:
                acc = wins.pop((start, end))
                out.append(self._result(key, start, end, acc))
            if not wins:
                del self.open_windows[key]

    # -- the operator ----------------------------------------------------------

    def flat_map_batch(self, items: list[Any]) -> list[Any]:
        out: list[Any] = []
        tf, vf = self.time_field, self.value_field
        add = self._add_session if self.kind == "session" else self._add_fixed
        for item in items:
            t = item[tf]
            key = self.key_of(item)
            if t < self.watermark:
                self.late_items += 1
                if self.late_mode == "side":
                    out.append({"key": key, "late": item, "watermark": self.watermark})
                continue
            add(key, t, item if vf is None else item[vf])
            if t > self.max_ts:
                self.max_ts = t
                self.watermark = t - self.max_lateness
        self._fire(self.watermark, out)
        return out

    def flat_map(self, item: Any) -> list[Any]:
        return self.flat_map_batch([item])

    def flush(self) -> list[dict[str, Any]]:
        """Fire every open window (the input has ended); the results."""
        out: list[Any] = []
        self._fire(math.inf, out)
        return out

    def end_of_input(self) -> list[dict[str, Any]]:
        """The input has ended: every window still open fires."""
        return self.flush()

    def get_state(self) -> dict[str, Any]:
        """Open windows, watermark and counters (plain data)."""
        if self.kind == "session":
            wins = [
                [k, s, e, acc]
                for k, ss in self.open_windows.items()
                for s, e, acc in ss
            ]
        else:
            wins = [
                [k, s, e, acc]
                for k, ws in self.open_windows.items()
                for (s, e), acc in ws.items()
            ]
        return {
            "watermark": self.watermark,
            "max_ts": self.max_ts,
            "open_windows": wins,
            "late_items": self.late_items,
            "fired": self.fired,
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Continue from a ``get_state()`` snapshot."""
        self.watermark, self.max_ts = state["watermark"], state["max_ts"]
        self.late_items, self.fired = state["late_items"], state["fired"]
        self.open_windows, self._due = {}, []
        for key, start, end, acc in state["open_windows"]:
            if self.kind == "session":
                self.open_windows.setdefault(key, []).append([start, end, acc])
            else:
                self.open_windows.setdefault(key, {})[(start, end)] = acc
            self._schedule(end, start, key)
