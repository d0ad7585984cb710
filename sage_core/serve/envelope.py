"""What a served request's item travels in, and the operator wrapper that keeps it.

A served pipeline's items are :class:`Envelope` s: the request id, the item, the
request's deadline and the share (``weight``) of the request this item stands for.
:func:`served_graph` rewrites a pipeline so that every operator between the
``http-request`` source and the ``http-response`` sink runs inside a
:class:`ServedOperator`: it unwraps the items, calls the operator (its batch method
when it has one, so batching is kept), and wraps the outputs again with the same id.

Semantics, per request (the sink completes a request when the weights it has seen
add up to 1):

* ``map``: one output; ``filter``: the item, or a :class:`Marker` ``"dropped"`` (the
  request is answered 204 when nothing else of it is left); ``flat_map``: each of
  the ``n`` outputs carries ``weight / n`` and its position, so the response is the
  list of outputs in order (zero outputs: ``"dropped"``).
* An operator raising on one item turns that item into a ``"failed"`` marker with
  the error; the other items of the batch go on (the batch is retried one item at a
  time to find the failing one). A request whose deadline has passed is not given
  to further operators (``"expired"``).
* ``co_map`` and ``join`` combine items of different requests and are refused
  (:class:`ServeError`).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from sage_core.common.errors import SageError
from sage_core.contract import Contract
from sage_core.functions import (
    FilterFunction,
    FlatMapFunction,
    Function,
    MapFunction,
    OperatorContext,
)
from sage_core.graph.model import KeySpec, LogicalGraph, Node, OperatorRef
from sage_core.graph.refs import for_role, load_key, load_operator, operator_ref
from sage_core.runtime.operators import key_function
from sage_core.serve.tokens import serving

REQUEST_SOURCE = "http-request"
RESPONSE_SINK = "http-response"
#: roles whose operators a served pipeline may use between source and sink
SERVABLE_ROLES = ("map", "filter", "flat_map")


class ServeError(SageError, ValueError):
    """A pipeline cannot be served as it is (the message says what to change)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One item of a served request.

    Attributes:
        rid: the request id (one per item posted).
        item: the payload the operators see.
        weight: the share of the request this item stands for (1 until a flat_map).
        path: position among the request's outputs (one index per flat_map passed).
        deadline: ``time.time()`` after which no one waits for the answer.
        multi: whether a flat_map was passed (the answer is then a list).
    """

    rid: str
    item: Any
    weight: Fraction = Fraction(1)
    path: tuple[int, ...] = ()
    deadline: float | None = None
    multi: bool = False


@dataclass(frozen=True, slots=True)
class Marker:
    """A request share that ends without an item: ``kind`` is ``"dropped"``
    (filtered out / no flat_map output), ``"failed"`` (``error`` = ``{operator,
    type, message}``) or ``"expired"`` (deadline passed)."""

    rid: str
    kind: str
    weight: Fraction = Fraction(1)
    error: Mapping[str, str] = field(default_factory=dict)


def _expired(env: Envelope, now: float) -> bool:
    return env.deadline is not None and now > env.deadline


def _failed(env: Envelope, operator: str, exc: BaseException) -> Marker:
    error = {"operator": operator, "type": type(exc).__name__, "message": str(exc)}
    return Marker(env.rid, "failed", env.weight, error)


def _instantiate(ref: OperatorRef, role: str, config: Mapping[str, Any]) -> Function:
    """The wrapped operator's Function (the same rules as the runtime's)."""
    from sage_core.compiler.plan import OperatorPlan
    from sage_core.runtime.operators import build_function

    op = OperatorPlan(
        name=ref.name, role=role, ref=ref, config=dict(config), parallelism=1,
        contract=Contract(),
    )  # fmt: skip
    return build_function(op)


class ServedOperator(FlatMapFunction):
    """Runs a map/filter/flat_map operator on envelopes (see the module doc).

    Args:
        inner_ref: the wrapped operator's reference.
        inner_role: its role.
        inner_config: its config.
        operator: its node name (for error messages).
        hub: the request hub's id (operators that stream text find it so).
    """

    def __init__(
        self,
        *,
        inner_ref: OperatorRef,
        inner_role: str,
        inner_config: Mapping[str, Any],
        operator: str,
        hub: str | None = None,
    ) -> None:
        super().__init__()
        self.inner = _instantiate(inner_ref, inner_role, inner_config)
        self.inner_role, self.operator, self.hub_id = inner_role, operator, hub
        self.inner_config = dict(inner_config)

    @classmethod
    def contract_for(cls, config: Mapping[str, Any]) -> Contract:
        impl = for_role(load_operator(config["inner_ref"]), config["inner_role"])
        if inspect.isclass(impl) and issubclass(impl, Function):
            return impl.contract_for(config["inner_config"])
        return Contract()

    def open(self, context: OperatorContext) -> None:
        self.inner.open(replace(context, config=self.inner_config))

    def close(self) -> None:
        self.inner.close()

    def get_state(self) -> Any:
        return self.inner.get_state()

    def _call(self, items: list[Any]) -> list[list[Any]]:
        """Outputs of the inner operator per input item."""
        inner = self.inner
        if self.inner_role == "map":
            assert isinstance(inner, MapFunction)
            return [[y] for y in inner.map_batch(items)]
        if self.inner_role == "filter":
            assert isinstance(inner, FilterFunction)
            kept = inner.filter_batch(items)
            if len(items) == 1:
                return [list(kept)]
            out: list[list[Any]] = []
            j = 0
            for x in items:  # kept is a subsequence of items (same objects)
                hit = j < len(kept) and kept[j] is x
                out.append([x] if hit else [])
                j += hit
            if j != len(kept):  # the filter returned copies: ask item by item
                return [list(inner.filter_batch([x])) for x in items]
            return out
        assert isinstance(inner, FlatMapFunction)
        if len(items) == 1:
            return [list(inner.flat_map_batch(items))]
        return [list(inner.flat_map(x)) for x in items]

    def _wrap(self, env: Envelope, outs: list[Any]) -> list[Any]:
        if self.inner_role != "flat_map":
            if not outs:
                return [Marker(env.rid, "dropped", env.weight)]
            return [replace(env, item=outs[0])]
        if not outs:
            return [Marker(env.rid, "dropped", env.weight)]
        w = env.weight / len(outs)
        return [
            replace(env, item=y, weight=w, path=(*env.path, i), multi=True)
            for i, y in enumerate(outs)
        ]

    def flat_map(self, item: Any) -> Iterable[Any]:
        return self.flat_map_batch([item])

    def flat_map_batch(self, items: list[Any]) -> list[Any]:
        now = time.time()
        live: list[Envelope] = []
        out: list[Any] = []
        slots: list[int] = []  # position in ``out`` of each live envelope
        for x in items:
            if isinstance(x, Envelope) and not _expired(x, now):
                slots.append(len(out))
                live.append(x)
                out.append(None)
            elif isinstance(x, Envelope):
                out.append(Marker(x.rid, "expired", x.weight))
            else:
                out.append(x)  # a marker passes through
        if live:
            results = self._results(live)
            for slot, res in zip(slots, results, strict=True):
                out[slot] = res
        flat: list[Any] = []
        for x in out:
            flat.extend(x) if isinstance(x, list) else flat.append(x)
        return flat

    def _results(self, live: list[Envelope]) -> list[list[Any]]:
        try:
            with serving(self.hub_id, [e.rid for e in live]):
                per_item = self._call([e.item for e in live])
            return [self._wrap(e, outs) for e, outs in zip(live, per_item, strict=True)]
        except Exception as exc:  # noqa: BLE001 - becomes this request's error
            if len(live) == 1:
                return [[_failed(live[0], self.operator, exc)]]
        results: list[list[Any]] = []
        for e in live:  # find the failing items; the others go on
            try:
                with serving(self.hub_id, [e.rid]):
                    outs = self._call([e.item])[0]
                results.append(self._wrap(e, outs))
            except Exception as exc:  # noqa: BLE001 - this request's error
                results.append([_failed(e, self.operator, exc)])
        return results


class EnvelopeKey:
    """The key of an envelope's item under the wrapped edge's key spec; markers
    are keyed by their request id."""

    def __init__(self, spec: KeySpec) -> None:
        self.spec = spec
        self._fn: Callable[[Any], Any] | None = None

    def __call__(self, env: Any) -> Any:
        if not isinstance(env, Envelope):
            return env.rid
        if self._fn is None:
            self._fn = key_function(self.spec)
        return self._fn(env.item)

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.spec, self._fn = state["spec"], None


def _check_key(spec: KeySpec) -> None:
    if spec.kind != "field":
        load_key(spec)  # fails now, with its own message, when it does not resolve


def served_graph(graph: LogicalGraph, **hub_config: Any) -> LogicalGraph:
    """``graph`` rewritten for serving: its one source becomes ``http-request``, its
    one sink ``http-response`` (both configured with ``hub_config``), every other
    operator runs in a :class:`ServedOperator`.

    Raises:
        ServeError: more than one source or sink, or a co_map/join operator.
    """
    nodes = list(graph.nodes.values())
    sources = [n for n in nodes if n.role == "source"]
    sinks = [n for n in nodes if n.role == "sink"]
    problems = []
    if len(sources) != 1 or len(sinks) != 1:
        problems.append(
            f"a served pipeline has one source and one sink (the request and "
            f"response); this one has {len(sources)} source(s) and {len(sinks)} "
            f"sink(s)"
        )
    bad = [n.name for n in nodes if n.role not in (*SERVABLE_ROLES, "source", "sink")]
    if bad:
        problems.append(
            f"operators {bad} combine items of different requests (co_map/join); "
            f"serve a pipeline of map, filter and flat_map operators"
        )
    if problems:
        raise ServeError(
            f"cannot serve pipeline {graph.name!r}: " + "; ".join(problems)
        )
    out = LogicalGraph(graph.name)
    for n in nodes:
        if n.role == "source":
            node = Node(
                name=n.name, role="source", ref=operator_ref(REQUEST_SOURCE),
                config=dict(hub_config),
            )  # fmt: skip
        elif n.role == "sink":
            node = Node(
                name=n.name, role="sink", ref=operator_ref(RESPONSE_SINK),
                config=dict(hub_config), parallelism=n.parallelism,
            )  # fmt: skip
        else:
            config = {
                "inner_ref": n.ref,
                "inner_role": n.role,
                "inner_config": dict(n.config),
                "operator": n.name,
                "hub": hub_config.get("hub"),
            }
            node = Node(
                name=n.name, role="flat_map",
                ref=OperatorRef("inline", f"served {n.name}", ServedOperator),
                config=config, parallelism=n.parallelism, contract=dict(n.contract),
                on_error="fail", options=dict(n.options),
            )  # fmt: skip
        out.add_node(node)
    for e in graph.edges:
        key = e.key
        if key is not None:
            _check_key(key)
            key = KeySpec("inline", f"request {key.name}", EnvelopeKey(key))
        out.add_edge(replace(e, key=key))
    return out


__all__ = [
    "Envelope",
    "Marker",
    "ServeError",
    "ServedOperator",
    "served_graph",
]
