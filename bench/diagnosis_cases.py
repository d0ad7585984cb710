"""The cases of ``diagnosis_bench.py``: pipeline configurations, the
counterfactuals predicted and run, and the injected bottleneck scenarios."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Cfg:
    """One pipeline: source -> stages -> sink, with its runtime settings."""

    n: int
    stages: tuple[tuple[str, float, int], ...] = (("op", 300e-6, 1),)
    sink_cost: float = 0.0
    rate: float | None = None
    hot: float = 0.0
    keyed: bool = False
    buffer: int = 16
    cap: int = 8
    policy: str = "round-robin"
    workers: int = 2
    cpu: float = 1.0
    dask: bool = True
    par: dict[str, int] = field(default_factory=dict)


#: Cfg fields of the job-wide knobs (``RagCfg`` uses the same names)
FIELDS = {"buffer_size": "buffer", "queue_capacity": "cap"}


def knob(base: Any, name: str, value: int) -> tuple[str, dict[str, Any], Any]:
    """The counterfactual setting job-wide knob ``name`` of config ``base``."""
    from sage_core.diagnosis.whatif import Change

    return (
        f"{name}={value}",
        {"changes": [Change(None, name, value)]},
        replace(base, **{FIELDS[name]: value}),
    )


def counterfactuals(
    smoke: bool, dask: bool, items: int = 6000
) -> list[tuple[str, dict[str, Any], Cfg]]:
    """(label, predict() keywords, the config actually run) per counterfactual;
    each run streams ``items`` items (1000 in smoke mode)."""
    from sage_core.diagnosis.whatif import Change

    base = Cfg(n=1000 if smoke else items, dask=dask)
    one = [
        (
            "op.parallelism=2",
            {"changes": [Change("op", "parallelism", 2)]},
            replace(base, par={"op": 2}),
        ),
        knob(base, "buffer_size", 64),
        knob(base, "queue_capacity", 2),
    ]
    if not smoke:
        one += [
            knob(base, "buffer_size", 4),
            (
                "op.parallelism=3",
                {"changes": [Change("op", "parallelism", 3)]},
                replace(base, par={"op": 3}),
            ),
        ]
    if dask:
        one += [
            (
                "policy=load-aware-pack",
                {"policy": "load-aware-pack"},
                replace(base, policy="load-aware-pack", cpu=0.25),
            ),
            ("workers=1", {"workers": 1}, replace(base, workers=1)),
        ]
        if not smoke:
            one += [
                ("workers=4", {"workers": 4}, replace(base, workers=4)),
                (
                    "workers=4 op.parallelism=2",
                    {"workers": 4, "changes": [Change("op", "parallelism", 2)]},
                    replace(base, workers=4, par={"op": 2}),
                ),
            ]
    return [("baseline", {}, base), *one]


def scenarios(smoke: bool) -> list[tuple[str, Cfg, str | None, str]]:
    """(name, config, expected operator (None: any), expected class)."""
    n = 1200 if smoke else 4000
    local = Cfg(n=n, dask=False)
    return [
        (
            "slow operator",
            replace(local, stages=(("fast", 20e-6, 1), ("slow", 400e-6, 1))),
            "slow",
            "compute",
        ),
        (
            "slow sink",
            replace(local, stages=(("op", 20e-6, 1),), sink_cost=400e-6),
            "sink",
            "backpressure",
        ),
        (
            "hot key",
            replace(local, stages=(("op", 300e-6, 2),), keyed=True, hot=0.8),
            "op",
            "skew",
        ),
        (
            "slow source",
            replace(local, stages=(("op", 20e-6, 1),), rate=1500.0),
            "src",
            "source",
        ),
        (
            "pack placement",
            replace(
                local,
                dask=True,
                stages=(("op", 300e-6, 2),),
                policy="load-aware-pack",
                cpu=0.25,
            ),
            "op",
            "placement",
        ),
        (
            "one-item packets",
            replace(local, dask=True, stages=(("op", 0.0, 1),), buffer=1, n=n // 2),
            None,
            "overhead",
        ),
    ]


def applied(c: Cfg, rec: dict[str, Any]) -> Cfg | None:
    """``c`` with the recommendation applied (None: not runnable, e.g. key salting)."""
    if rec["policy"]:
        return replace(c, policy=rec["policy"])
    par = dict(c.par)
    out = c
    for text in rec["changes"]:
        name, _, value = text.partition("=")
        op, _, knob = name.rpartition(".")
        if knob == "parallelism":
            par[op] = int(value)
        elif knob == "buffer_size":
            out = replace(out, buffer=int(value))
        elif knob == "queue_capacity":
            out = replace(out, cap=int(value))
    return replace(out, par=par) if rec["changes"] else None
