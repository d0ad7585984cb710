"""Operator contracts: what an operator needs and promises, read by compiler and runtime.

A contract is declared by an operator class (``contract = Contract(...)``) and may be
overridden per use in the DSL (``.map("embed", contract={"gpu": 1, "batch_size": 64})``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from sage_core.common.errors import SageError

State = Literal["stateless", "stateful"]


class ContractError(SageError, ValueError):
    """A contract field has an invalid value or an unknown name."""


@dataclass(frozen=True, slots=True)
class Contract:
    """Resources, state and I/O behaviour of one operator.

    Attributes:
        cpu: CPU cores one replica uses (placement counts it against worker threads).
        gpu: GPUs one replica needs; > 0 places it only on workers started with
            ``--resources GPU=N``.
        memory: bytes of memory one replica needs (0: not declared).
        resources: further named resources (``{"TPU": 1}``), matched against the
            workers' ``--resources``.
        state: ``"stateful"`` operators keep keyed state (never chained).
        batch_size: most items handed to one ``*_batch`` call.
        max_wait_ms: how long a replica may wait to fill a batch once it has one item.
        streaming: the operator emits partial results (e.g. token streams).
        queue_capacity: slots of the replica's bounded input queue (None: default).
        engine: the external engine one replica's calls run on (e.g. an
            OpenAI-compatible server's URL; None: the work runs in the worker).
            Replicas naming the same engine share it: the diagnosis models their
            service as that engine batching their concurrent calls, not as worker CPU.
    """

    cpu: float = 1.0
    gpu: float = 0.0
    memory: int = 0
    resources: Mapping[str, float] = field(default_factory=dict)
    state: State = "stateless"
    batch_size: int = 1
    max_wait_ms: float = 0.0
    streaming: bool = False
    queue_capacity: int | None = None
    engine: str | None = None

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ContractError("invalid contract: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Every invalid field, as ``"field: why"`` strings."""
        out = []
        for name in ("cpu", "gpu", "memory", "batch_size", "max_wait_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                out.append(f"{name}: must be a number, got {value!r}")
        if out:
            return out
        if self.cpu < 0:
            out.append(f"cpu: must be >= 0, got {self.cpu}")
        if self.gpu < 0:
            out.append(f"gpu: must be >= 0, got {self.gpu}")
        if self.memory < 0:
            out.append(f"memory: must be >= 0, got {self.memory}")
        for name, amount in self.resources.items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)):
                out.append(f"resources.{name}: must be a number, got {amount!r}")
            elif amount < 0:
                out.append(f"resources.{name}: must be >= 0, got {amount}")
        if self.state not in ("stateless", "stateful"):
            out.append(f"state: must be 'stateless' or 'stateful', got {self.state!r}")
        if self.batch_size < 1:
            out.append(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.max_wait_ms < 0:
            out.append(f"max_wait_ms: must be >= 0, got {self.max_wait_ms}")
        if self.queue_capacity is not None and self.queue_capacity < 1:
            out.append(f"queue_capacity: must be >= 1, got {self.queue_capacity}")
        if self.engine is not None and (
            not isinstance(self.engine, str) or not self.engine
        ):
            out.append(
                f"engine: must be a non-empty string or None, got {self.engine!r}"
            )
        return out

    @property
    def stateful(self) -> bool:
        return self.state == "stateful"

    def required_resources(self) -> dict[str, float]:
        """Dask resource names and amounts a worker must offer (``GPU`` for gpu)."""
        needed = {name: float(v) for name, v in self.resources.items() if v > 0}
        if self.gpu > 0:
            needed["GPU"] = float(self.gpu)
        return needed

    def merged(self, overrides: Mapping[str, Any] | Contract | None) -> Contract:
        """A copy with ``overrides`` applied (a mapping of field names or a Contract)."""
        if overrides is None:
            return self
        if isinstance(overrides, Contract):
            return overrides
        known = {f.name for f in fields(Contract)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ContractError(
                f"unknown contract field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values = dict(overrides)
        if "resources" in values:
            values["resources"] = dict(values["resources"] or {})
        try:
            return replace(self, **values)
        except TypeError as exc:
            raise ContractError(f"invalid contract: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-friendly)."""
        data = asdict(self)
        data["resources"] = dict(self.resources)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Contract:
        """Inverse of ``to_dict``; unknown fields raise ``ContractError``."""
        return cls().merged(data)
