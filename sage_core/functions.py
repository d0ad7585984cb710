"""Function base classes: what an operator implements.

The runtime builds one instance per replica, on the worker that hosts it, from the
operator's class (or plugin name) and its config. It calls ``open(context)`` once, then the
batch methods, then ``close()``. The batch methods (``map_batch`` ...) are what the runtime
calls; their defaults loop over the per-item method, so a subclass implements whichever is
natural — per item for simple logic, per batch for embedding/generation.

Stateful operators declare ``contract = Contract(state="stateful")`` and implement
``get_state()``: the runtime reads it when a replica finishes (``JobResult.states``).
With checkpoints on (``checkpoint_interval_s``) the runtime also snapshots it at every
checkpoint barrier and hands it back to ``restore_state()`` on a fresh instance after
a failure. Keyed operators can instead keep per-key values in
``context.keyed_state``, which the runtime snapshots by key group and redistributes
when a job resumes at another parallelism.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sage_core.contract import Contract

#: the epoch under which a job that succeeded commits its sinks' remaining output
#: (``SinkFunction.commit``); sinks that publish only at the end wait for it
FINAL_EPOCH = 2**62


@dataclass(frozen=True, slots=True)
class OperatorContext:
    """What a replica knows about where it runs.

    Attributes:
        operator: the operator's name in the logical graph.
        replica_index: 0-based index of this replica among the operator's replicas.
        parallelism: number of replicas of the operator.
        job_id: the job this replica belongs to.
        worker: address/name of the process hosting the replica ("local" in-process).
        config: the operator's config as given in the DSL or spec.
        keyed_state: managed keyed state, ``{key: value}`` for the keys routed to
            this replica; checkpointed and restored by the runtime.
        checkpointing: whether the job takes checkpoints (transactional sinks stage
            their output per checkpoint epoch only then).
        contract: the operator's effective contract: its own (``contract_for``)
            with the DSL/spec ``contract=`` overrides applied, as placed.
    """

    operator: str
    replica_index: int = 0
    parallelism: int = 1
    job_id: str = ""
    worker: str = "local"
    config: Mapping[str, Any] = field(default_factory=dict)
    keyed_state: dict[Any, Any] = field(default_factory=dict)
    checkpointing: bool = False
    contract: Contract = field(default_factory=Contract)

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger(f"sage.operator.{self.operator}")


class Function:
    """Base of every operator function.

    Subclasses accept their config as keyword arguments in ``__init__``; the default
    keeps it in ``self.config``.
    """

    #: the kind of operator ("source", "map", ...), set by the role base classes
    role: ClassVar[str] = ""
    #: default contract of this operator; DSL/spec ``contract=`` overrides fields
    contract: ClassVar[Contract] = Contract()
    #: config keys holding file paths: a spec file resolves relative ones from its
    #: own directory (the DSL leaves them to the current directory)
    path_config: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **config: Any) -> None:
        self.config = config

    @classmethod
    def contract_for(cls, config: Mapping[str, Any]) -> Contract:
        """The contract of this operator when configured with ``config``.

        Default: the class's ``contract``. Operators whose needs follow their config
        (an embedding stage on a GPU backend, a batch size option) override it; it
        must be cheap (no model loading) and may raise ``ContractError`` for a bad
        config. DSL/spec ``contract=`` overrides still apply on top.
        """
        return cls.contract

    def open(self, context: OperatorContext) -> None:
        """Called once on the replica before any item (connect, load models)."""

    def end_of_input(self) -> Iterable[Any]:
        """Called once when every upstream replica has finished (after the last
        item, before ``close``); what it returns goes downstream like the operator's
        other outputs, ahead of the end of the stream. Operators that hold items
        back (event-time windows, buffers) emit what they still hold. Not called
        on cancel or failure, nor on sources and sinks. Default: nothing."""
        return ()

    def close(self) -> None:
        """Called once after the last item, on cancel and on failure."""

    def get_state(self) -> Any:
        """Snapshot of keyed/operator state (stateful operators override)."""
        return None

    def snapshot_state(self, epoch: int) -> Any:
        """What checkpoint ``epoch`` stores for this replica (default:
        ``get_state()``). Called on the replica's thread between batches; the
        runtime serialises the value at once, so returning live objects is fine."""
        return self.get_state()

    def restore_state(self, state: Any) -> None:
        """Take back what ``snapshot_state`` returned, on a fresh instance, before
        ``open()``. Stateful operators that return state must override this."""
        if state is not None:
            raise TypeError(
                f"{type(self).__name__} returns state from get_state() but does not "
                f"implement restore_state(state); checkpoints cannot restore it"
            )


class SourceFunction(Function):
    """Produces the items of a pipeline. Each replica reads its share of the input.

    Checkpoints record each source replica's offset: the number of items its
    ``run()`` iterator has yielded. A restore calls ``run_from(context, offset)``,
    which by default re-runs ``run()`` and skips ``offset`` items, so any source
    that yields the same items in the same order on every run is replayable. Sources
    that can seek (files, ranges, offsets in a log) override ``run_from`` to start
    there directly; a source that cannot replay (a live feed) loses what was in
    flight on a restore.
    """

    role = "source"

    def run(self, context: OperatorContext) -> Iterable[Any]:
        """Yield this replica's items in order (replica ``context.replica_index`` of
        ``context.parallelism``). The runtime stops iterating on cancel."""
        raise TypeError(f"{type(self).__name__} must implement run(context)")

    def run_from(self, context: OperatorContext, offset: int) -> Iterable[Any]:
        """This replica's items after the first ``offset`` (a checkpoint restore)."""
        return itertools.islice(iter(self.run(context)), offset, None)


class MapFunction(Function):
    """One output per input item."""

    role = "map"

    def map(self, item: Any) -> Any:
        raise TypeError(f"{type(self).__name__} must implement map() or map_batch()")

    def map_batch(self, items: list[Any]) -> list[Any]:
        """Outputs for a batch, same length and order as ``items``."""
        return [self.map(item) for item in items]


class FilterFunction(Function):
    """Keeps the items for which ``filter`` is true."""

    role = "filter"

    def filter(self, item: Any) -> bool:
        raise TypeError(f"{type(self).__name__} must implement filter()")

    def filter_batch(self, items: list[Any]) -> list[Any]:
        """The kept items, in order."""
        return [item for item in items if self.filter(item)]


class FlatMapFunction(Function):
    """Zero or more outputs per input item."""

    role = "flat_map"

    def flat_map(self, item: Any) -> Iterable[Any]:
        raise TypeError(f"{type(self).__name__} must implement flat_map()")

    def flat_map_batch(self, items: list[Any]) -> list[Any]:
        """All outputs of the batch, flattened, in input order."""
        out: list[Any] = []
        for item in items:
            out.extend(self.flat_map(item))
        return out


class CoMapFunction(Function):
    """Two inputs (``a.connect(b).co_map(...)``): ``map1`` for items of ``a``,
    ``map2`` for items of ``b``; one output each."""

    role = "co_map"

    def map1(self, item: Any) -> Any:
        raise TypeError(f"{type(self).__name__} must implement map1()")

    def map2(self, item: Any) -> Any:
        raise TypeError(f"{type(self).__name__} must implement map2()")

    def co_map_batch(self, items: list[Any], input_index: int) -> list[Any]:
        """Outputs for a batch that arrived on input ``input_index`` (0 or 1)."""
        fn = self.map1 if input_index == 0 else self.map2
        return [fn(item) for item in items]


class JoinFunction(Function):
    """Keyed join of two inputs: ``join(left, right)`` for each matching pair.

    The runtime keeps, per key, the items seen on each side (within the join's window
    or in its keyed store) and calls ``join`` once per new match.
    """

    role = "join"
    contract = Contract(state="stateful")

    def join(self, left: Any, right: Any) -> Any:
        raise TypeError(f"{type(self).__name__} must implement join()")


class SinkFunction(Function):
    """Consumes the items at the end of a pipeline.

    Without checkpoints a sink writes as items arrive. With checkpoints a plain sink
    is at-least-once: after a restore, items since the last checkpoint reach it
    again. A transactional sink is exactly-once through a two-phase commit: it
    stages output under the current epoch while ``context.checkpointing`` is on;
    ``snapshot_state(epoch)`` seals the staged output of ``epoch`` (pre-commit) and
    returns what is needed to find it; ``commit(epoch)`` publishes every sealed
    epoch up to ``epoch`` once the checkpoint is durable (it may run on another
    thread than ``sink_batch``); ``restore_state(state)`` publishes what the restored
    checkpoint sealed and discards every later staged output. The ``jsonl`` and
    ``collect`` sinks are transactional.
    """

    role = "sink"

    def sink(self, item: Any) -> None:
        raise TypeError(f"{type(self).__name__} must implement sink() or sink_batch()")

    def sink_batch(self, items: list[Any]) -> None:
        for item in items:
            self.sink(item)

    def commit(self, epoch: int) -> None:
        """Publish the output sealed for every epoch up to ``epoch`` (transactional
        sinks; the default does nothing)."""

    def result(self) -> Any:
        """What this replica hands back to the caller when the job ends (e.g. the
        collected items of the ``collect`` sink); ``None`` for most sinks."""
        return None


ROLES: dict[str, type[Function]] = {
    cls.role: cls
    for cls in (
        SourceFunction,
        MapFunction,
        FilterFunction,
        FlatMapFunction,
        CoMapFunction,
        JoinFunction,
        SinkFunction,
    )
}


class ByRole:
    """One operator name for several roles, e.g. a ``jsonl`` source and sink.

    Register it like a class (``register("jsonl", ByRole(source=A, sink=B))``); the
    graph picks the class matching the role the operator is used in.
    """

    def __init__(self, **by_role: type[Function]) -> None:
        unknown = sorted(set(by_role) - set(ROLES))
        if unknown or not by_role:
            raise ValueError(
                f"ByRole takes role=class pairs with roles among {', '.join(ROLES)}; "
                f"got {', '.join(unknown) or 'none'}"
            )
        self.by_role = dict(by_role)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.by_role)

    def for_role(self, role: str) -> type[Function]:
        """The class for ``role``.

        Raises:
            LookupError: this operator has no variant for ``role``.
        """
        try:
            return self.by_role[role]
        except KeyError:
            raise LookupError(
                f"no {role} variant (this operator is a {' or a '.join(self.roles)})"
            ) from None

    def __repr__(self) -> str:
        inner = ", ".join(f"{r}={c.__name__}" for r, c in self.by_role.items())
        return f"ByRole({inner})"
