"""The downstream side of a replica: its output channels and the packets it cuts.

``Outputs`` is built from the plan once per replica. ``targets`` lists the replicas
this one sends to (a driver maps each to a queue or a link by its slot, the index in
``targets``); ``ports`` holds one ``OutPort`` per output channel. ``emit()`` routes a
step's output items over every port (keyed channels hash the items' keys, routed ones
ask their router, load-aware routers read the driver's ``load_of(slot)``) and cuts
them into packets of at most ``buffer_size`` items: ``(slot, packet)`` pairs in the
wire format ``runtime.worker`` describes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sage_core import plugins
from sage_core.compiler.plan import ExecutionPlan
from sage_core.observe.metrics import ReplicaMetrics
from sage_core.routing import Candidate
from sage_core.runtime.operators import key_function

Outbound = list[tuple[int, Any]]
#: what happens to an item whose key function raised: ``(items, item, exc)``
KeyFailure = Callable[[list[Any], Any, Exception], None]


class OutPort:
    """One downstream channel of a replica: its targets and router."""

    __slots__ = ("candidates", "channel", "input_index", "key_of", "router", "slots")

    def __init__(
        self,
        channel: str,
        input_index: int,
        slots: list[int],
        router: Any,
        candidates: tuple[Candidate, ...],
        key_of: Callable[[Any], Any] | None,
    ) -> None:
        self.channel, self.input_index, self.slots = channel, input_index, slots
        self.router, self.candidates, self.key_of = router, candidates, key_of


class Outputs:
    """The output channels of replica ``replica_id`` of ``task``; see the module
    docstring."""

    def __init__(
        self,
        plan: ExecutionPlan,
        task: str,
        replica_id: str,
        metrics: ReplicaMetrics,
    ) -> None:
        self.replica, self.metrics = replica_id, metrics
        self.buffer_size = plan.settings.buffer_size
        self.targets: list[str] = []
        self.ports: list[OutPort] = []
        #: each channel's router (plugin name, config), for ports that gain targets
        self._routers: dict[str, tuple[str, dict[str, Any]]] = {}
        for ch in plan.outputs_of(task):
            self._routers[ch.id] = (ch.router, dict(ch.router_config))
            dsts = dict(ch.routes)[replica_id]
            slots = []
            for d in dsts:
                if d not in self.targets:
                    self.targets.append(d)
                slots.append(self.targets.index(d))
            router = self._router(ch.id) if len(dsts) > 1 else None
            self.ports.append(
                OutPort(
                    ch.id,
                    ch.input_index,
                    slots,
                    router,
                    tuple(Candidate(i, d) for i, d in enumerate(dsts)),
                    key_function(ch.key) if ch.key is not None else None,
                )
            )
        self._set_fast()

    def _router(self, channel: str) -> Any:
        name, config = self._routers[channel]
        return plugins.get("router", name, scope="dataflow")(**config)

    def _set_fast(self) -> None:
        only = self.ports[0] if len(self.ports) == 1 else None
        #: the one port when it needs neither a router nor keys (the hot path)
        self.fast = (
            only if only and only.router is None and only.key_of is None else None
        )

    # -- in-place rescaling (``compiler.rescale``): called between steps ---------

    def add_target(self, replica: str, channels: set[str]) -> int:
        """Route ``channels`` to ``replica`` too (a replica added while the job
        runs); returns its slot, the next after the current targets."""
        slot = len(self.targets)
        self.targets.append(replica)
        for n, port in enumerate(self.ports):
            if port.channel not in channels:
                continue
            self.ports[n] = self._port(
                port, [*port.slots, slot], port.router or self._router(port.channel)
            )
        self._set_fast()
        return slot

    def retire_target(self, replica: str) -> list[tuple[int, str]]:
        """Stop routing to ``replica`` (a retired replica); returns the (slot,
        channel) pairs it was reached on, each owed its end-of-stream marker."""
        if replica not in self.targets:
            return []
        slot = self.targets.index(replica)
        owed = []
        for n, port in enumerate(self.ports):
            if slot in port.slots:
                left = [s for s in port.slots if s != slot]
                self.ports[n] = self._port(port, left, port.router)
                owed.append((slot, port.channel))
        self._set_fast()
        return owed

    def _port(self, port: OutPort, slots: list[int], router: Any) -> OutPort:
        targets = self.targets
        return OutPort(
            port.channel,
            port.input_index,
            slots,
            router,
            tuple(Candidate(i, targets[s]) for i, s in enumerate(slots)),
            port.key_of,
        )

    def emit(
        self,
        outs: list[Any],
        traces: list[dict[str, Any]] | None,
        now: float,
        load_of: Callable[[int], float],
        key_failed: KeyFailure,
    ) -> Outbound:
        """``outs`` as packets for every port; the sampled ``traces`` ride on the
        first packet. An item whose key cannot be computed goes to ``key_failed``
        (the chain's error policy) and is not sent."""
        size = self.buffer_size
        fast = self.fast
        if fast is not None and len(outs) <= size:  # one target, no router, no key
            self.metrics.packets_out += 1
            return [
                (fast.slots[0], (outs, fast.input_index, now, traces, self.replica))
            ]
        result: Outbound = []
        for n, port in enumerate(self.ports):
            items = outs if n == 0 else list(outs)
            keys = None
            if port.key_of is not None:
                items, keys = _keys(port.key_of, items, key_failed)
                self.metrics.note_keys(keys)
            if port.router is None:
                parts = [(port.slots[0], items)]
            else:
                cands = port.candidates
                if port.router.load_aware:
                    cands = tuple(
                        Candidate(c.index, c.name, load=load_of(port.slots[c.index]))
                        for c in cands
                    )
                split = port.router.partition(items, keys, cands)
                parts = [(port.slots[i], part) for i, part in enumerate(split) if part]
            for slot, part in parts:
                for i in range(0, len(part), size) if len(part) > size else (0,):
                    chunk = part if len(part) <= size else part[i : i + size]
                    result.append(
                        (slot, (chunk, port.input_index, now, traces, self.replica))
                    )
                    traces = None
        self.metrics.packets_out += len(result)
        return result


def _keys(
    key_of: Callable[[Any], Any], outs: list[Any], key_failed: KeyFailure
) -> tuple[list[Any], list[Any]]:
    """The items whose key could be computed, and their keys."""
    try:
        return outs, [key_of(x) for x in outs]
    except Exception:  # noqa: BLE001 - find the item, apply the chain's policy
        kept, keys = [], []
        for x in outs:
            try:
                keys.append(key_of(x))
                kept.append(x)
            except Exception as exc:  # noqa: BLE001 - handed to the error policy
                key_failed(outs, x, exc)
        return kept, keys
