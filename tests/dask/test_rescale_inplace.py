"""``job.scale(op, n)`` on a running job, on both runtimes: replicas are added and
retired while items flow, no item is lost or duplicated, and no other operator's
replica is restarted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_core import LocalEnvironment, MapFunction, RescaleError
from sage_core.api.dask_environment import DaskEnvironment
from sage_core.observe.records import load_record

OPENED: list[str] = []
_opened_lock = threading.Lock()


def paced(n: int) -> Iterator[int]:
    for i in range(n):
        time.sleep(0.001)
        yield i


class CountedDouble(MapFunction):
    """Doubles, 2 ms an item; records every open (a model load, in a real one)."""

    def open(self, ctx: Any) -> None:
        with _opened_lock:
            OPENED.append(f"{ctx.operator}#{ctx.replica_index}")

    def map(self, item: int) -> int:
        time.sleep(0.002)
        return 2 * item


def _env(runtime: str, client: Any, name: str) -> Any:
    kw: dict[str, Any] = {"buffer_size": 1, "chaining": False, "queue_capacity": 8}
    if runtime == "local":
        return LocalEnvironment(name, **kw)
    return DaskEnvironment(name, client=client, policy="load-aware-spread", **kw)


def run_scaled(runtime: str, client: Any, targets: list[int], n: int) -> Any:
    """A paced source -> ``work`` (CountedDouble) -> ``after`` (CountedDouble) ->
    collect; ``work`` is scaled to each of ``targets`` in turn while it runs."""
    OPENED.clear()
    env = _env(runtime, client, "rescaled")
    s = env.from_source(paced, n=n).map(CountedDouble, name="work")
    s.map(CountedDouble, name="after").sink("collect")
    job = env.submit()
    changed = []
    for target in targets:
        time.sleep(0.15)
        changed.append(job.scale("work", target))
    got = job.wait(timeout=120)
    assert sorted(got.collected()) == [4 * i for i in range(n)]  # none lost, none twice
    return job, got, changed


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(targets=st.lists(st.integers(1, 4), min_size=1, max_size=4))
@pytest.mark.parametrize("runtime", ["local", "dask"])
def test_replicas_come_and_go_while_items_flow(
    runtime: str, embedded: Any, targets: list[int]
) -> None:
    job, got, changed = run_scaled(runtime, embedded, targets, 600)
    work = {r: m for r, m in got.metrics["replicas"].items() if m["task"] == "work"}
    # every replica that ever ran: the first and each one added (a retired one
    # was added before: the highest-numbered replica goes first)
    assert set(work) == {"work#0"} | {rid for step in changed for rid in step}
    assert len(job.plan.replicas_of("work")) == targets[-1]
    assert sum(m["items_in"] for m in work.values()) == 600
    assert all(m["state"] == "finished" for m in work.values())
    # the neighbour opened once: scaling work restarted nothing else
    assert OPENED.count("after#0") == 1
    assert sorted(o for o in OPENED if o.startswith("work")) == sorted(
        f"work#{r.split('#')[1]}" for r in work
    )


@pytest.mark.parametrize("runtime", ["local", "dask"])
def test_scaling_an_ended_job_or_a_wrong_operator_is_refused(
    runtime: str, embedded: Any
) -> None:
    job, _, _ = run_scaled(runtime, embedded, [], 20)
    with pytest.raises(RescaleError, match="not running"):
        job.scale("work", 2)
    with pytest.raises(RescaleError, match="no operator 'nope'"):
        job.scale("nope", 2)
    with pytest.raises(RescaleError, match="at least 1"):
        job.scale("work", 0)
    with pytest.raises(RescaleError, match="a source"):
        job.scale("paced", 2)


def test_a_dask_job_records_its_rescales_with_placements(embedded: Any) -> None:
    job, _, changed = run_scaled("dask", embedded, [3, 2], 400)
    assert changed == [["work#1", "work#2"], ["work#2"]]
    record = load_record(job.job_id)
    steps = [
        (r["from"], r["to"], r.get("added") or r.get("retired"))
        for r in record["rescales"]
    ]
    assert steps == [(1, 2, "work#1"), (2, 3, "work#2"), (3, 2, "work#2")]
    placed = record["rescales"][0]["placement"]
    assert placed["replica"] == "work#1" and placed["policy"] == "load-aware-spread"
    assert set(record["placement"]) >= {"work#0", "work#1"}
    from click.testing import CliRunner

    from sage_core.cli import cli

    shown = CliRunner().invoke(cli, ["explain", job.job_id])
    assert shown.exit_code == 0, shown.output
    assert "rescaled work 1 -> 2: added work#1 on " in shown.output
    assert "rescaled work 3 -> 2: retired work#2" in shown.output
    table = shown.output.split("\nrescaled ")[0]
    assert "work#1" in table  # its placement decision trace
