"""DataStream: the fluent DSL that builds a logical graph.

Every operator method takes the operator as a plugin name, a ``"pkg.mod:attr"`` path,
a callable or a Function class, then keyword-only options of the node itself and the
operator's config:

* ``name``: the operator's name in the graph (default: derived from ``op``);
* ``parallelism``: its replicas (default: the environment's ``parallelism``);
* ``contract``: Contract fields overriding what the operator declares (a mapping or
  a Contract);
* ``on_error``: ``"fail"`` (default) or ``"dead-letter"``;
* ``restart``: the restart strategy when this operator fails (``"none"``,
  ``"fixed(N, DELAY_S)"``, ``"exponential(INITIAL_S, MAX_S, ATTEMPTS)"``; default:
  the job's ``restart`` setting); the job restarts from its last checkpoint;
* any other keyword: the operator's config (``op(**config)`` for Function classes).

These five names are therefore never part of an operator's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from sage_core.checkpoint.restart import RestartStrategy
from sage_core.contract import Contract
from sage_core.graph.model import Edge, KeySpec, Node
from sage_core.graph.refs import key_spec, operator_ref

if TYPE_CHECKING:
    from sage_core.api.environment import Environment
    from sage_core.api.windowing import WindowedStream

#: what an operator does with an item it fails on (``graph.model.ON_ERROR``)
OnError = Literal["fail", "dead-letter"]


class _NodeOptions(NamedTuple):
    """The keyword-only options of a DSL operator method that are not config."""

    name: str | None
    parallelism: int | None
    contract: Mapping[str, Any] | Contract | None
    on_error: str
    restart: str | None = None


@dataclass(frozen=True, slots=True)
class _Head:
    """An operator whose outputs feed the next operator, with the edge's routing."""

    node: str
    router: str | None = None
    router_config: Mapping[str, Any] = field(default_factory=dict)
    key: KeySpec | None = None


def _contract_overrides(
    contract: Mapping[str, Any] | Contract | None,
) -> dict[str, Any]:
    if contract is None:
        return {}
    if isinstance(contract, Contract):
        return contract.to_dict()
    return dict(contract)


def _base_name(op: Any, role: str) -> str:
    if isinstance(op, str):
        return op.rpartition(":")[2].rpartition(".")[2] if ":" in op else op
    name = getattr(op, "__name__", None)
    if isinstance(op, tuple) or not name or name == "<lambda>":
        return role
    return str(name)


class DataStream:
    """A stream of items leaving one operator (or several, after ``union``)."""

    def __init__(self, env: Environment, heads: list[_Head]) -> None:
        self.env = env
        self._heads = heads

    @property
    def name(self) -> str:
        """The operator producing this stream (the first one after a union)."""
        return self._heads[0].node

    def _add(
        self,
        role: str,
        op: Any,
        *,
        inputs: list[tuple[_Head, int]],
        name: str | None,
        parallelism: int | None,
        contract: Mapping[str, Any] | Contract | None,
        on_error: str,
        config: dict[str, Any],
        options: dict[str, Any] | None = None,
        restart: str | None = None,
    ) -> str:
        graph = self.env.graph
        options = dict(options or {})
        if restart is not None:
            RestartStrategy.parse(restart)  # RestartStrategyError when malformed
            options["restart"] = restart
        node_name = name or graph.unique_name(_base_name(op, role))
        graph.add_node(
            Node(
                name=node_name,
                role=role,
                ref=operator_ref(op),
                config=config,
                parallelism=self.env.parallelism
                if parallelism is None
                else parallelism,
                contract=_contract_overrides(contract),
                on_error=on_error,
                options=options,
            )
        )
        for head, index in inputs:
            graph.add_edge(
                Edge(
                    src=head.node,
                    dst=node_name,
                    input_index=index,
                    router=head.router,
                    router_config=dict(head.router_config),
                    key=head.key,
                )
            )
        return node_name

    def _one_input(
        self,
        role: str,
        op: Any,
        node: _NodeOptions,
        config: dict[str, Any],
    ) -> DataStream:
        name = self._add(
            role,
            op,
            inputs=[(h, 0) for h in self._heads],
            name=node.name,
            parallelism=node.parallelism,
            contract=node.contract,
            on_error=node.on_error,
            config=config,
            restart=node.restart,
        )
        return DataStream(self.env, [_Head(name)])

    def map(
        self,
        op: Any,
        *,
        name: str | None = None,
        parallelism: int | None = None,
        contract: Mapping[str, Any] | Contract | None = None,
        on_error: OnError = "fail",
        restart: str | None = None,
        **config: Any,
    ) -> DataStream:
        """One output per item (``op(item)`` or a MapFunction)."""
        node = _NodeOptions(name, parallelism, contract, on_error, restart)
        return self._one_input("map", op, node, config)

    def filter(
        self,
        op: Any,
        *,
        name: str | None = None,
        parallelism: int | None = None,
        contract: Mapping[str, Any] | Contract | None = None,
        on_error: OnError = "fail",
        restart: str | None = None,
        **config: Any,
    ) -> DataStream:
        """Keep the items for which ``op(item)`` is true."""
        node = _NodeOptions(name, parallelism, contract, on_error, restart)
        return self._one_input("filter", op, node, config)

    def flat_map(
        self,
        op: Any,
        *,
        name: str | None = None,
        parallelism: int | None = None,
        contract: Mapping[str, Any] | Contract | None = None,
        on_error: OnError = "fail",
        restart: str | None = None,
        **config: Any,
    ) -> DataStream:
        """Zero or more outputs per item (``op(item)`` returns an iterable)."""
        node = _NodeOptions(name, parallelism, contract, on_error, restart)
        return self._one_input("flat_map", op, node, config)

    def sink(
        self,
        op: Any,
        *,
        name: str | None = None,
        parallelism: int | None = None,
        contract: Mapping[str, Any] | Contract | None = None,
        on_error: OnError = "fail",
        restart: str | None = None,
        **config: Any,
    ) -> SinkStream:
        """End the stream in a sink (``"collect"``, ``"jsonl"``, a callable ...)."""
        node = _NodeOptions(name, parallelism, contract, on_error, restart)
        stream = self._one_input("sink", op, node, config)
        return SinkStream(self.env, stream.name)

    def collect(self, *, name: str | None = None, parallelism: int = 1) -> SinkStream:
        """Sink into the job result: ``result.collected(stream.name)``."""
        return self.sink("collect", name=name, parallelism=parallelism)

    def _routed(self, **changes: Any) -> DataStream:
        heads = [_Head(h.node, **{**_head_fields(h), **changes}) for h in self._heads]
        cls = KeyedStream if changes.get("key", self._heads[0].key) else DataStream
        return cls(self.env, heads)

    def key_by(self, key: Any) -> KeyedStream:
        """Partition by key (a field name, ``"pkg.mod:fn"`` or a callable): items with
        one key reach one replica of the next operator (``key-hash``), in order."""
        return self._routed(key=key_spec(key), router=None)  # type: ignore[return-value]

    def rebalance(self) -> DataStream:
        """Spread items over the next operator's replicas in turn (round-robin)."""
        return self._routed(router="round-robin", router_config={})

    def broadcast(self) -> DataStream:
        """Send every item to every replica of the next operator."""
        return self._routed(router="broadcast", router_config={})

    def route(self, router: str, **router_config: Any) -> DataStream:
        """Choose the next operator's replica with router plugin ``router``."""
        return self._routed(router=router, router_config=router_config)

    def union(self, *others: DataStream) -> DataStream:
        """Items of this stream and of ``others`` flow into the next operator."""
        heads = list(self._heads)
        for other in others:
            heads.extend(other._heads)
        return DataStream(self.env, heads)

    def connect(self, other: DataStream) -> ConnectedStreams:
        """Pair two streams for ``co_map``: input 0 is this one, input 1 ``other``."""
        return ConnectedStreams(self, other)

    def join(
        self,
        other: DataStream,
        op: Any,
        *,
        window: int | None = None,
        window_s: float | None = None,
        name: str | None = None,
        parallelism: int | None = None,
        contract: Mapping[str, Any] | Contract | None = None,
        on_error: OnError = "fail",
        restart: str | None = None,
        **config: Any,
    ) -> DataStream:
        """Keyed join: ``op(left, right)`` for each pair with equal keys (both sides
        must be ``key_by``). ``window=N`` keeps the last N items per key and side,
        ``window_s=T`` those of the last T seconds; default: all of them."""
        options = {
            k: v
            for k, v in (("window", window), ("window_s", window_s))
            if v is not None
        }
        node = self._add(
            "join",
            op,
            inputs=[(h, 0) for h in self._heads] + [(h, 1) for h in other._heads],
            name=name,
            parallelism=parallelism,
            contract=contract,
            on_error=on_error,
            config=config,
            options=options,
            restart=restart,
        )
        return DataStream(self.env, [_Head(node)])

    def interval_join(
        self,
        other: DataStream,
        *,
        lower: float,
        upper: float,
        time_field: str = "ts",
        max_lateness: float = 0.0,
        late: Literal["drop", "side"] = "drop",
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Event-time interval join of two keyed streams: ``{"key", "left",
        "right"}`` for each pair with equal keys and ``lower <= right.t - left.t <=
        upper`` (operator ``interval-join``, see ``sage_plugins.streams``)."""
        from sage_core.api.windowing import key_config

        config = {
            "left_key": key_config(self, "interval_join"),
            "right_key": key_config(other, "interval_join"),
            "lower": lower,
            "upper": upper,
            "time_field": time_field,
            "max_lateness": max_lateness,
            "late": late,
        }
        return self.connect(other).co_map(
            "interval-join", name=name, parallelism=parallelism, **config
        )


def _head_fields(h: _Head) -> dict[str, Any]:
    return {"router": h.router, "router_config": h.router_config, "key": h.key}


class KeyedStream(DataStream):
    """A stream partitioned by key (the result of ``key_by``)."""

    def window(
        self,
        *,
        size: float | None = None,
        slide: float | None = None,
        gap: float | None = None,
        time_field: str = "ts",
        max_lateness: float = 0.0,
    ) -> WindowedStream:
        """Event-time windows per key: tumbling (``size``), sliding (``size`` and
        ``slide``) or session (``gap``); then ``.aggregate(...)`` or ``.reduce(...)``.
        Items more than ``max_lateness`` behind the newest time seen are late."""
        from sage_core.api.windowing import WindowedStream, key_config

        config = {
            "key": key_config(self, "window"),
            "size": size,
            "slide": slide,
            "gap": gap,
            "time_field": time_field,
            "max_lateness": max_lateness,
        }
        return WindowedStream(self, {k: v for k, v in config.items() if v is not None})


class ConnectedStreams:
    """Two streams feeding one two-input operator."""

    def __init__(self, first: DataStream, second: DataStream) -> None:
        self.first, self.second = first, second

    def co_map(
        self,
        op: Any,
        op2: Any = None,
        *,
        name: str | None = None,
        parallelism: int | None = None,
        contract: Mapping[str, Any] | Contract | None = None,
        on_error: OnError = "fail",
        restart: str | None = None,
        **config: Any,
    ) -> DataStream:
        """``op`` is a CoMapFunction (class/plugin/path), or two callables: ``op``
        for items of the first stream, ``op2`` for the second."""
        impl = (op, op2) if op2 is not None else op
        node = self.first._add(
            "co_map",
            impl,
            inputs=[(h, 0) for h in self.first._heads]
            + [(h, 1) for h in self.second._heads],
            name=name,
            parallelism=parallelism,
            contract=contract,
            on_error=on_error,
            config=config,
            restart=restart,
        )
        return DataStream(self.first.env, [_Head(node)])


class SinkStream:
    """The end of a stream: its sink operator's name, to read its results."""

    def __init__(self, env: Environment, name: str) -> None:
        self.env, self.name = env, name

    def __repr__(self) -> str:
        return f"SinkStream({self.name!r})"
