"""Where the simulator's batches run (``sim.Simulator``), and at what speed while
several run at once.

A worker process's active batches share its ``slots`` CPUs equally (processor
sharing: the GIL time-slices threads, it does not run one batch to its end). An
external engine (a task's ``Contract.engine``) batches the calls active on it as a
continuous-batching server does: calls of k_1..k_n items progress at
f(k_i) / f(k_1 + ... + k_n) each, f being the task's measured service time per
call size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sage_core.diagnosis.model import ServiceModel


@dataclass(slots=True)
class Server:
    """A worker process: its active batches share ``slots`` CPUs equally; or an
    external engine (``engine``): they progress as one batch (module docstring).
    ``active`` holds each batch's service seconds left, ``then`` what runs when it
    ends."""

    slots: int
    active: dict[str, float] = field(default_factory=dict)
    then: dict[str, Callable[[], None]] = field(default_factory=dict)
    engine: bool = False
    #: engines: items and service model of each active batch
    size: dict[str, tuple[int, ServiceModel]] = field(default_factory=dict)
    #: engines: f(k) per (service model, k), computed once (a fit is not cheap)
    means: dict[tuple[int, int], float] = field(default_factory=dict)

    def mean(self, f: ServiceModel, k: int) -> float:
        key = (id(f), k)
        got = self.means.get(key)
        if got is None:
            got = self.means[key] = f.mean(k)
        return got

    def rates(self) -> dict[str, float]:
        """The share of its own service time each active batch gets done per second."""
        if not self.engine:
            return dict.fromkeys(self.active, min(1.0, self.slots / len(self.active)))
        total = sum(self.size[rid][0] for rid in self.active)
        out = {}
        for rid in self.active:
            k, f = self.size[rid]
            own, together = self.mean(f, k), self.mean(f, total)
            out[rid] = min(1.0, own / together) if own > 0 and together > 0 else 1.0
        return out
