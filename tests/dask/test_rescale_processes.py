"""``job.scale`` on real ``sage scheduler``/``sage worker`` processes: replicas added
on other workers receive over direct links and send on, retired ones drain, and
every item arrives once."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

from sage_core.api.dask_environment import DaskEnvironment

pytestmark = pytest.mark.slow

# the workers rebuild this module's functions from the plan: ship them by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def paced(n: int) -> Iterator[int]:
    for i in range(n):
        time.sleep(0.0005)
        yield i


def slow_double(x: int) -> int:
    time.sleep(0.002)
    return 2 * x


def test_replicas_added_and_retired_across_processes(cluster: dict[str, Any]) -> None:
    env = DaskEnvironment(
        "rescaled",
        client=cluster["client"],
        policy="load-aware-spread",
        chaining=False,
        buffer_size=4,
        queue_capacity=8,
    )
    n = 3000
    env.from_source(paced, n=n).map(slow_double, name="work").sink("collect")
    job = env.submit()
    time.sleep(0.5)
    added = job.scale("work", 3)
    time.sleep(0.5)
    retired = job.scale("work", 2)
    got = job.wait(timeout=180)
    assert Counter(got.collected()) == Counter(2 * i for i in range(n))
    assert added == ["work#1", "work#2"] and retired == ["work#2"]
    snaps = got.metrics["replicas"]
    work = {rid: s for rid, s in snaps.items() if s["task"] == "work"}
    assert set(work) == {"work#0", "work#1", "work#2"}
    assert all(s["items_in"] > 0 for s in work.values())  # each one took a share
    assert sum(s["items_in"] for s in work.values()) == n
    # the new replicas went to other workers than the first one: they were reached
    # over the network, not a same-process queue
    hosts = {s["worker"] for s in work.values()}
    assert len(hosts) >= 2
    remote = [o for s in snaps.values() for o in s["outlets"] if o["remote"]]
    assert remote and any(o.get("link") for o in remote)
