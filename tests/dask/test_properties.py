"""A subset of the core's random-pipeline properties, rerun on a 2-worker cluster:
same multiset of sink outputs and the same keyed state as a plain reference, for
random parallelism, queue capacities, packet sizes, routers and placements."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_core import Contract, MapFunction
from sage_core.api.dask_environment import DaskEnvironment


class KeyedCounter(MapFunction):
    contract = Contract(state="stateful")

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[int, int] = {}

    def map(self, item: int) -> int:
        self.counts[item % 5] = self.counts.get(item % 5, 0) + 1
        return item % 5

    def get_state(self) -> dict[int, int]:
        return dict(self.counts)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "items": draw(st.lists(st.integers(0, 60), max_size=300)),
        "steps": draw(
            st.lists(
                st.sampled_from(["map", "filter", "flat_map", "counter", "route"]),
                min_size=1,
                max_size=4,
            )
        ),
        "par": draw(st.lists(st.integers(1, 3), min_size=6, max_size=6)),
        "router": draw(st.sampled_from(["round-robin", "least-queue", "broadcast"])),
        "settings": {
            "queue_capacity": draw(st.integers(1, 16)),
            "buffer_size": draw(st.integers(1, 32)),
            "max_packets": draw(st.integers(1, 8)),
            "chaining": draw(st.booleans()),
        },
        "policy": draw(st.sampled_from(["round-robin", "load-aware-spread", "fifo"])),
    }


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_random_pipelines_match_the_reference(
    embedded: Any, case: dict[str, Any]
) -> None:
    env = DaskEnvironment(
        "prop", client=embedded, policy=case["policy"], **case["settings"]
    )
    ref = list(case["items"])
    s = env.from_collection(ref, parallelism=case["par"][0])
    state: dict[int, int] | None = None
    for i, step in enumerate(case["steps"]):
        p = case["par"][i + 1]
        if step == "map":
            s, ref = (
                s.map(lambda x: (3 * x + 1) % 97, parallelism=p),
                [(3 * x + 1) % 97 for x in ref],
            )
        elif step == "filter":
            s, ref = (
                s.filter(lambda x: x % 3 != 0, parallelism=p),
                [x for x in ref if x % 3],
            )
        elif step == "flat_map":
            s = s.flat_map(lambda x: [x, x + 1] if x % 2 else [], parallelism=p)
            ref = [y for x in ref for y in ([x, x + 1] if x % 2 else [])]
        elif step == "counter" and state is None:
            s = s.key_by(lambda x: x % 5).map(KeyedCounter, parallelism=p, name="count")
            state = dict(Counter(x % 5 for x in ref))
            ref = [x % 5 for x in ref]
        elif step == "route":
            s = s.route(case["router"]).map(lambda x: x, parallelism=p)
            ref = ref * (p if case["router"] == "broadcast" else 1)
    s.sink("collect", parallelism=case["par"][5])
    result = env.submit().wait(timeout=120)
    assert Counter(result.collected()) == Counter(ref)
    if state is not None:
        merged: dict[int, int] = {}
        for part in result.state_of("count"):
            assert not set(part) & set(merged)
            merged.update(part)
        assert merged == state
