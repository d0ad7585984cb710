"""The ExecutionPlan: what runs where, as plain frozen data with a JSON round trip.

A plan names operators by reference (plugin name, ``pkg.mod:attr`` path; inline
objects travel cloudpickled) and carries config, never live classes, so any process
can rebuild its replicas. Structure:

* ``operators``: the logical operators (reference, role, config, merged contract).
* ``tasks``: chains of operators that run in one replica thread/actor (a chain of one
  operator when chaining does not apply).
* ``replicas``: ``task#index`` with its input queue capacity and placement decision.
* ``channels``: every logical edge between tasks, materialised as the list of
  downstream replicas each upstream replica may send to, with the router choosing
  among them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sage_core.compiler.placement import PlacementDecision
from sage_core.compiler.settings import PlanFormatError, RuntimeSettings
from sage_core.contract import Contract
from sage_core.graph.model import KeySpec, OperatorRef

PLAN_VERSION = 1


@dataclass(frozen=True, slots=True)
class OperatorPlan:
    """One logical operator with everything needed to build its instances."""

    name: str
    role: str
    ref: OperatorRef
    config: Mapping[str, Any]
    parallelism: int
    contract: Contract
    on_error: str = "fail"
    options: Mapping[str, Any] = field(default_factory=dict)
    #: the key of each input (input index -> KeySpec) when that input is keyed
    input_keys: Mapping[int, KeySpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """Operators fused into one replica (head first); ``name`` joins them with +."""

    name: str
    operators: tuple[str, ...]
    parallelism: int


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    """One replica of a task: its id, input queue and placement."""

    id: str
    task: str
    index: int
    queue_capacity: int
    placement: PlacementDecision


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    """A logical edge between two tasks, materialised replica to replica.

    Attributes:
        routes: for each upstream replica id, the downstream replica ids it may
            send to, in the order the router sees them as candidates.
        partition: ``"forward"`` (replica i -> replica i) or ``"routed"``.
    """

    id: str
    src: str
    dst: str
    src_task: str
    dst_task: str
    input_index: int
    router: str
    router_config: Mapping[str, Any]
    partition: str
    key: KeySpec | None
    routes: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    """The compiled, placed pipeline; see the module docstring."""

    job: str
    policy: str
    settings: RuntimeSettings
    operators: tuple[OperatorPlan, ...]
    tasks: tuple[TaskPlan, ...]
    replicas: tuple[ReplicaPlan, ...]
    channels: tuple[ChannelPlan, ...]
    version: int = PLAN_VERSION

    def operator(self, name: str) -> OperatorPlan:
        for op in self.operators:
            if op.name == name:
                return op
        raise KeyError(name)

    def task(self, name: str) -> TaskPlan:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def replicas_of(self, task: str) -> list[ReplicaPlan]:
        return [r for r in self.replicas if r.task == task]

    def inputs_of(self, task: str) -> list[ChannelPlan]:
        return [c for c in self.channels if c.dst_task == task]

    def outputs_of(self, task: str) -> list[ChannelPlan]:
        return [c for c in self.channels if c.src_task == task]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready); inline objects are cloudpickled into base64."""
        return _plan_out(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecutionPlan:
        """Inverse of ``to_dict``.

        Raises:
            PlanFormatError: unknown version or malformed data.
        """
        version = data.get("version")
        if version != PLAN_VERSION:
            raise PlanFormatError(
                f"plan version {version!r} is not supported (this SAGE reads "
                f"version {PLAN_VERSION}); recompile the pipeline"
            )
        try:
            return _plan_in(data)
        except PlanFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanFormatError(f"malformed plan: {exc!r}") from None

    @classmethod
    def from_json(cls, text: str) -> ExecutionPlan:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PlanFormatError(f"plan is not JSON: {exc}") from None
        return cls.from_dict(data)


# --- encoding -------------------------------------------------------------------
# Plan structure is encoded field by field (tuples of records become JSON lists);
# free-form values (config, router config, options) use ``encode_value``, which
# keeps tuples and non-string keys and cloudpickles anything that is not JSON.


def encode_value(value: Any) -> Any:
    """JSON-ready form of a free-form value (config): exact for JSON types, tuples
    and non-string keys; anything else is cloudpickled."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode_value(v) for v in value]}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode_value(v) for k, v in value.items()}
        return {
            "$items": [[encode_value(k), encode_value(v)] for k, v in value.items()]
        }
    return _pickle(value)


def decode_value(value: Any) -> Any:
    """Inverse of ``encode_value``."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, Mapping):
        if set(value) == {"$tuple"}:
            return tuple(decode_value(v) for v in value["$tuple"])
        if set(value) == {"$items"}:
            return {decode_value(k): decode_value(v) for k, v in value["$items"]}
        if set(value) == {"$pickle"}:
            import cloudpickle

            return cloudpickle.loads(base64.b64decode(value["$pickle"]))
        return {k: decode_value(v) for k, v in value.items()}
    return value


def _pickle(obj: Any) -> dict[str, str]:
    import cloudpickle

    try:
        blob = cloudpickle.dumps(obj)
    except Exception as exc:  # noqa: BLE001 - any pickling failure: not portable
        raise PlanFormatError(
            f"{obj!r} cannot be serialised into the plan ({exc}); use a plugin name "
            f"or an importable 'pkg.module:attr' path"
        ) from None
    return {"$pickle": base64.b64encode(blob).decode("ascii")}


def _ref_out(ref: OperatorRef | KeySpec | None) -> Any:
    if ref is None:
        return None
    out: dict[str, Any] = {"kind": ref.kind, "name": ref.name}
    if ref.kind == "inline":
        out["obj"] = _pickle(ref.obj)
    return out


def _ref_in(data: Mapping[str, Any]) -> OperatorRef:
    return OperatorRef(data["kind"], data["name"], decode_value(data.get("obj")))


def _key_in(data: Mapping[str, Any] | None) -> KeySpec | None:
    if data is None:
        return None
    return _key(data)


def _key(data: Mapping[str, Any]) -> KeySpec:
    return KeySpec(data["kind"], data["name"], decode_value(data.get("obj")))


def _plan_out(plan: ExecutionPlan) -> dict[str, Any]:
    return {
        "version": plan.version,
        "job": plan.job,
        "policy": plan.policy,
        "settings": {
            f.name: getattr(plan.settings, f.name) for f in fields(RuntimeSettings)
        },
        "operators": [
            {
                "name": op.name,
                "role": op.role,
                "ref": _ref_out(op.ref),
                "config": encode_value(op.config),
                "parallelism": op.parallelism,
                "contract": op.contract.to_dict(),
                "on_error": op.on_error,
                "options": encode_value(op.options),
                "input_keys": {str(i): _ref_out(k) for i, k in op.input_keys.items()},
            }
            for op in plan.operators
        ],
        "tasks": [
            {
                "name": t.name,
                "operators": list(t.operators),
                "parallelism": t.parallelism,
            }
            for t in plan.tasks
        ],
        "replicas": [
            {
                "id": r.id,
                "task": r.task,
                "index": r.index,
                "queue_capacity": r.queue_capacity,
                "placement": r.placement.to_dict(),
            }
            for r in plan.replicas
        ],
        "channels": [
            {
                "id": c.id,
                "src": c.src,
                "dst": c.dst,
                "src_task": c.src_task,
                "dst_task": c.dst_task,
                "input_index": c.input_index,
                "router": c.router,
                "router_config": encode_value(c.router_config),
                "partition": c.partition,
                "key": _ref_out(c.key),
                "routes": [[src, list(dsts)] for src, dsts in c.routes],
            }
            for c in plan.channels
        ],
    }


def _plan_in(data: Mapping[str, Any]) -> ExecutionPlan:
    return ExecutionPlan(
        job=data["job"],
        policy=data["policy"],
        settings=RuntimeSettings.from_mapping(data["settings"]),
        operators=tuple(
            OperatorPlan(
                name=op["name"],
                role=op["role"],
                ref=_ref_in(op["ref"]),
                config=decode_value(op["config"]),
                parallelism=int(op["parallelism"]),
                contract=Contract.from_dict(op["contract"]),
                on_error=op["on_error"],
                options=decode_value(op["options"]),
                input_keys={int(i): _key(k) for i, k in op["input_keys"].items()},
            )
            for op in data["operators"]
        ),
        tasks=tuple(
            TaskPlan(t["name"], tuple(t["operators"]), int(t["parallelism"]))
            for t in data["tasks"]
        ),
        replicas=tuple(
            ReplicaPlan(
                id=r["id"],
                task=r["task"],
                index=int(r["index"]),
                queue_capacity=int(r["queue_capacity"]),
                placement=PlacementDecision.from_dict(r["placement"]),
            )
            for r in data["replicas"]
        ),
        channels=tuple(
            ChannelPlan(
                id=c["id"],
                src=c["src"],
                dst=c["dst"],
                src_task=c["src_task"],
                dst_task=c["dst_task"],
                input_index=int(c["input_index"]),
                router=c["router"],
                router_config=decode_value(c["router_config"]),
                partition=c["partition"],
                key=_key_in(c["key"]),
                routes=tuple((src, tuple(dsts)) for src, dsts in c["routes"]),
            )
            for c in data["channels"]
        ),
        version=int(data["version"]),
    )
