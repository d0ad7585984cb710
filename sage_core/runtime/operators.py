"""Building operator instances from plan references, and running them on batches.

``build_function`` turns an OperatorPlan into a Function instance: Function classes
are instantiated with the config, plugin factories are called, and plain callables
are wrapped in a role adapter (``fn(item, **config)``). Executors run one operator on
a list of items: per-item functions are looped here (so any batch size is fine and a
failing item is known exactly); functions that override a ``*_batch`` method get
chunks of at most ``contract.batch_size`` items.
"""

from __future__ import annotations

import inspect
import itertools
import operator as _op
import pickle
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from sage_core.common.errors import SageError
from sage_core.common.preview import preview
from sage_core.compiler.plan import OperatorPlan
from sage_core.functions import (
    CoMapFunction,
    FilterFunction,
    FlatMapFunction,
    Function,
    JoinFunction,
    MapFunction,
    OperatorContext,
    SinkFunction,
    SourceFunction,
)
from sage_core.graph.model import KeySpec
from sage_core.graph.refs import for_role, load_key, load_operator
from sage_core.observe.metrics import OperatorStats


class OperatorFailure(SageError):
    """An operator raised on an item; names operator, replica, item sequence and key."""

    def __init__(
        self,
        *,
        operator: str,
        replica: str,
        sequence: int,
        item: Any,
        key: Any,
        cause: BaseException,
        batch: int = 1,
    ) -> None:
        self.operator, self.replica, self.sequence = operator, replica, sequence
        self.item, self.key, self.cause = item, key, cause
        what = (
            f"item #{sequence}" if batch == 1 else f"batch of {batch} from #{sequence}"
        )
        keyed = f" (key {key!r})" if key is not None else ""
        shown = preview(item)
        super().__init__(
            f"operator {operator!r} (replica {replica}) failed on {what}{keyed}: "
            f"{type(cause).__name__}: {cause}; item: {shown}. Fix the operator, "
            f"or set on_error='dead-letter' to route failing items to the "
            f"dead-letter sink"
        )


def encode_failure(exc: BaseException) -> bytes:
    """A failure in a form that survives pickling (OperatorFailure's keyword-only
    constructor does not)."""
    if isinstance(exc, OperatorFailure):
        cause: BaseException = exc.cause
        try:
            pickle.dumps(cause)
        except Exception:  # noqa: BLE001 - unpicklable cause: keep its text
            cause = RuntimeError(f"{type(cause).__name__}: {cause}")
        item, key = exc.item, exc.key
        try:
            pickle.dumps((item, key))
        except Exception:  # noqa: BLE001
            item, key = repr(item), repr(key)
        fields = {
            "operator": exc.operator,
            "replica": exc.replica,
            "sequence": exc.sequence,
            "item": item,
            "key": key,
            "cause": cause,
        }
        return pickle.dumps(("operator", fields))
    try:
        return pickle.dumps(("other", exc))
    except Exception:  # noqa: BLE001
        return pickle.dumps(("other", RuntimeError(f"{type(exc).__name__}: {exc}")))


def decode_failure(blob: bytes) -> BaseException:
    """The failure ``encode_failure`` wrote (blobs come from the job's own replicas)."""
    kind, payload = pickle.loads(blob)
    if kind == "operator":
        return OperatorFailure(**payload)
    return payload


class ConfigError(SageError, TypeError):
    """An operator rejected its config, or a factory returned no Function."""


# --- building -----------------------------------------------------------------


class _CallableSource(SourceFunction):
    def __init__(
        self, fn: Callable[..., Iterable[Any]], config: dict[str, Any]
    ) -> None:
        super().__init__(**config)
        self.fn = fn

    def run(self, context: OperatorContext) -> Iterable[Any]:
        items = self.fn(**self.config)
        if context.parallelism == 1:
            return items
        return itertools.islice(items, context.replica_index, None, context.parallelism)


def _bind(fn: Callable[..., Any], config: dict[str, Any]) -> Callable[..., Any]:
    if not config:
        return fn
    return lambda *args: fn(*args, **config)


def _adapter(role: str, fn: Any, config: dict[str, Any]) -> Function:
    """Wrap a plain callable (or a pair for co_map) as a Function of ``role``."""
    if role == "source":
        return _CallableSource(fn, config)
    base: dict[str, type[Function]] = {
        "map": MapFunction,
        "filter": FilterFunction,
        "flat_map": FlatMapFunction,
        "co_map": CoMapFunction,
        "join": JoinFunction,
        "sink": SinkFunction,
    }
    inst = base[role](**config)
    if role == "co_map":
        f1, f2 = fn
        setattr(inst, "map1", _bind(f1, config))  # noqa: B010 - instance override
        setattr(inst, "map2", _bind(f2, config))  # noqa: B010
    else:
        method = {"map": "map", "filter": "filter", "flat_map": "flat_map"}.get(
            role, role
        )
        setattr(inst, method, _bind(fn, config))
    return inst


def build_function(op: OperatorPlan) -> Function:
    """A fresh Function instance for one replica of ``op``.

    Raises:
        ConfigError: the class rejected the config, or a factory returned no Function.
    """
    obj = for_role(load_operator(op.ref), op.role)
    config = dict(op.config)
    if inspect.isclass(obj) and issubclass(obj, Function):
        try:
            return obj(**config)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"operator {op.name!r} ({op.ref.describe()}) rejected its config "
                f"{sorted(config)}: {exc}"
            ) from None
    if op.ref.kind == "plugin":
        made = obj(**config)
        if not isinstance(made, Function):
            raise ConfigError(
                f"operator plugin {op.ref.name!r} returned {type(made).__name__}, "
                f"not a Function"
            )
        return made
    return _adapter(op.role, obj, config)


def key_function(spec: KeySpec) -> Callable[[Any], Any]:
    """The callable computing the key of an item for a key spec."""
    if spec.kind == "field":
        return _op.itemgetter(spec.name)
    fn: Callable[[Any], Any] = load_key(spec)
    return fn


def overrides(fn: Function, base: type, method: str) -> bool:
    """Whether ``fn``'s class replaces ``base.method`` (a real batch implementation)."""
    return getattr(type(fn), method) is not getattr(base, method)


# --- executing ----------------------------------------------------------------

DeadLetter = Callable[[str, Any, BaseException, int], None]


class Executor:
    """Runs one operator of a replica on batches of items."""

    #: whether the operator's outputs go on (a sink's ``sink_batch`` result does not)
    emits = True

    def __init__(
        self,
        op: OperatorPlan,
        fn: Function,
        *,
        replica: str,
        stats: OperatorStats,
        dead_letter: DeadLetter,
        key_of: Callable[[Any], Any] | None,
    ) -> None:
        self.op, self.fn, self.replica, self.stats = op, fn, replica, stats
        self.name = op.name
        self.batch_size = op.contract.batch_size
        self.dead_letter_mode = op.on_error == "dead-letter"
        self._dead_letter = dead_letter
        self._key_of = key_of
        self.seq = 0  # items seen before the current batch
        self.batched = any(
            overrides(fn, base, method)
            for base, method in (
                (MapFunction, "map_batch"),
                (FilterFunction, "filter_batch"),
                (FlatMapFunction, "flat_map_batch"),
                (CoMapFunction, "co_map_batch"),
                (SinkFunction, "sink_batch"),
            )
            if isinstance(fn, base)
        )

    def _key(self, item: Any) -> Any:
        if self._key_of is None:
            return None
        try:
            return self._key_of(item)
        except Exception:  # noqa: BLE001 - the key is only shown in the message
            return None

    def failed(
        self,
        items: list[Any],
        item: Any,
        exc: BaseException,
        batch: int = 1,
        *,
        pos: int | None = None,
    ) -> None:
        """Handle a failure on ``item`` (or a whole chunk starting there): dead-letter
        or raise. ``pos`` is the item's index in ``items`` where the caller knows it
        (otherwise the first item that is ``item``)."""
        if pos is None:
            pos = next((i for i, x in enumerate(items) if x is item), 0)
        seq = self.seq + pos
        self.stats.errors += batch
        if self.dead_letter_mode:
            self.stats.dead_letters += batch
            self._dead_letter(self.name, item, exc, seq)
            return
        raise OperatorFailure(
            operator=self.name,
            replica=self.replica,
            sequence=seq,
            item=item,
            key=self._key(item),
            cause=exc,
            batch=batch,
        ) from exc

    def _chunks(self, items: list[Any]) -> Iterable[tuple[int, list[Any]]]:
        b = self.batch_size
        if len(items) <= b:
            yield 0, items
        else:
            for i in range(0, len(items), b):
                yield i, items[i : i + b]

    def _batch(self, items: list[Any], call: Callable[[list[Any]], Any]) -> list[Any]:
        """Run a batch method per chunk; a failing chunk fails (or dead-letters)
        each of its items."""
        out: list[Any] = []
        for start, chunk in self._chunks(items):
            try:
                got = call(chunk)
            except Exception as exc:  # noqa: BLE001 - operator errors are reported
                if not self.dead_letter_mode:
                    self.failed(items, chunk[0], exc, batch=len(chunk), pos=start)
                for i, item in enumerate(chunk, start):
                    self.failed(items, item, exc, pos=i)
                continue
            if got is not None:
                out.extend(got)
        return out

    def process(self, items: list[Any], input_index: int) -> list[Any]:
        """Run the operator on ``items`` (from input ``input_index``); its outputs."""
        if self.batched:
            got = self._batch(items, self.batch_call(input_index))
            return got if self.emits else []
        out: list[Any] = []
        it = iter(items)
        while True:
            try:
                self.run(it, out, input_index)
                return out
            except Exception as exc:  # noqa: BLE001 - operator errors are reported
                # ``run`` takes an item from ``it`` and then calls the function on
                # it: the failing item is the last one taken
                pos = len(items) - _op.length_hint(it) - 1
                self.failed(items, items[pos], exc, pos=pos)

    def run(self, it: Iterator[Any], out: list[Any], input_index: int) -> None:
        """The per-item loop: call the function on each item of ``it`` in turn and
        add its outputs to ``out``. On a failure ``process`` reports the item and
        calls ``run`` again with the rest of the iterator."""
        raise TypeError(f"{type(self).__name__} must implement run()")

    def batch_call(self, input_index: int) -> Callable[[list[Any]], Any]:
        """The ``*_batch`` method the operator overrides."""
        raise TypeError(f"{type(self).__name__} must implement batch_call()")


class MapExecutor(Executor):
    def run(self, it: Iterator[Any], out: list[Any], input_index: int) -> None:
        m, append = cast(MapFunction, self.fn).map, out.append
        for x in it:
            append(m(x))

    def batch_call(self, input_index: int) -> Callable[[list[Any]], Any]:
        return cast(MapFunction, self.fn).map_batch


class CoMapExecutor(Executor):
    def run(self, it: Iterator[Any], out: list[Any], input_index: int) -> None:
        fn = cast(CoMapFunction, self.fn)
        m, append = (fn.map1 if input_index == 0 else fn.map2), out.append
        for x in it:
            append(m(x))

    def batch_call(self, input_index: int) -> Callable[[list[Any]], Any]:
        fn = cast(CoMapFunction, self.fn)
        return lambda chunk: fn.co_map_batch(chunk, input_index)


class FilterExecutor(Executor):
    def run(self, it: Iterator[Any], out: list[Any], input_index: int) -> None:
        f, append = cast(FilterFunction, self.fn).filter, out.append
        for x in it:
            if f(x):
                append(x)

    def batch_call(self, input_index: int) -> Callable[[list[Any]], Any]:
        return cast(FilterFunction, self.fn).filter_batch


class FlatMapExecutor(Executor):
    def run(self, it: Iterator[Any], out: list[Any], input_index: int) -> None:
        f, extend = cast(FlatMapFunction, self.fn).flat_map, out.extend
        for x in it:
            extend(f(x))

    def batch_call(self, input_index: int) -> Callable[[list[Any]], Any]:
        return cast(FlatMapFunction, self.fn).flat_map_batch


class SinkExecutor(Executor):
    emits = False

    def run(self, it: Iterator[Any], out: list[Any], input_index: int) -> None:
        s = cast(SinkFunction, self.fn).sink
        for x in it:
            s(x)

    def batch_call(self, input_index: int) -> Callable[[list[Any]], Any]:
        return cast(SinkFunction, self.fn).sink_batch


EXECUTORS: dict[str, type[Executor]] = {
    "map": MapExecutor,
    "filter": FilterExecutor,
    "flat_map": FlatMapExecutor,
    "co_map": CoMapExecutor,
    "sink": SinkExecutor,
}


def format_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
