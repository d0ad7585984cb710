"""``Function.end_of_input``: what an operator holds back goes downstream when its
input ends, through the rest of its chain, ahead of the end of the stream, on
every replica, on both runtimes."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import cloudpickle
import pytest

from sage_core import FlatMapFunction, LocalEnvironment
from sage_core.api.dask_environment import DaskEnvironment

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class HoldPairs(FlatMapFunction):
    """Emits items two at a time; an odd one out is held until the input ends."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Any] = []

    def flat_map(self, item: Any) -> list[Any]:
        self.held.append(item)
        if len(self.held) < 2:
            return []
        out, self.held = self.held, []
        return out

    def end_of_input(self) -> list[Any]:
        out, self.held = self.held, []
        return out


def build(env: Any, chaining: bool) -> None:
    s = env.from_collection(list(range(101)), parallelism=1)
    s = s.flat_map(HoldPairs, parallelism=3, name="hold").map(
        lambda x: x * 10, parallelism=3
    )
    s.sink("collect")


@pytest.mark.parametrize("chaining", [True, False])
def test_held_items_reach_the_sink_through_the_rest_of_the_chain(
    chaining: bool,
) -> None:
    env = LocalEnvironment("held", chaining=chaining)
    build(env, chaining)
    result = env.execute(timeout=60)
    assert Counter(result.collected()) == Counter(x * 10 for x in range(101))
    assert result.metrics["operators"]["hold"]["items_out"] == 101


def test_held_items_on_a_dask_cluster(embedded: Any) -> None:
    env = DaskEnvironment("held", client=embedded, chaining=False)
    build(env, False)
    result = env.submit().wait(timeout=120)
    assert Counter(result.collected()) == Counter(x * 10 for x in range(101))
