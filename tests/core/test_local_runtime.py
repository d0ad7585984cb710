"""The DSL on the local runtime: operators of every kind, errors, cancel, metrics."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import (
    Contract,
    FlatMapFunction,
    JobFailed,
    LocalEnvironment,
    MapFunction,
    SinkFunction,
    SourceFunction,
)
from sage_core.functions import OperatorContext
from sage_core.runtime.operators import OperatorFailure


def double(x: int) -> int:
    return 2 * x


class Tokenize(FlatMapFunction):
    def flat_map(self, item: str) -> list[str]:
        return item.split()


class BatchRecorder(MapFunction):
    """Records the size of every batch it is handed (a batch-native operator)."""

    contract = Contract(batch_size=8)
    sizes: ClassVar[list[int]] = []

    def map_batch(self, items: list[Any]) -> list[Any]:
        BatchRecorder.sizes.append(len(items))
        return items


def test_callables_classes_plugins_and_paths_mix() -> None:
    env = LocalEnvironment("mix")
    words = env.from_collection(["a b", "c", "d e f"]).flat_map(Tokenize)
    out = words.map(str.upper).sink("collect", name="shout")
    result = env.execute(timeout=30)
    assert sorted(result.collected(out.name)) == ["A", "B", "C", "D", "E", "F"]
    assert result.status == "succeeded"
    ops = result.metrics["operators"]
    assert ops["Tokenize"]["items_in"] == 3 and ops["Tokenize"]["items_out"] == 6


def test_dotted_path_operator_and_parallel_replicas() -> None:
    env = LocalEnvironment("paths", chaining=False)
    s = env.from_source("range", stop=100, parallelism=2)
    s.map("tests.core.test_local_runtime:double", parallelism=3).collect()
    result = env.execute(timeout=30)
    assert sorted(result.collected()) == [2 * i for i in range(100)]
    replicas = result.metrics["replicas"]
    assert {r for r in replicas if r.startswith("double#")} == {
        "double#0",
        "double#1",
        "double#2",
    }


def test_union_co_map_and_join() -> None:
    env = LocalEnvironment("multi")
    a = env.from_collection([1, 2, 3])
    b = env.from_collection([10, 20])
    a.union(b).collect(name="union")
    a.connect(b).co_map(lambda x: ("a", x), lambda y: ("b", y)).collect(name="co")
    users = env.from_collection([{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}])
    orders = env.from_collection([{"user": 1, "n": 5}, {"user": 1, "n": 7}])
    users.key_by("id").join(
        orders.key_by("user"), lambda u, o: (u["name"], o["n"]), parallelism=2
    ).collect(name="joined")
    result = env.execute(timeout=30)
    assert sorted(result.collected("union")) == [1, 2, 3, 10, 20]
    assert sorted(result.collected("co")) == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 10),
        ("b", 20),
    ]
    assert sorted(result.collected("joined")) == [("ann", 5), ("ann", 7)]
    (store,) = [s for s in result.state_of("join") if 1 in s]
    assert store[1]["left"] == [{"id": 1, "name": "ann"}]


def test_batch_contract_bounds_every_batch() -> None:
    BatchRecorder.sizes = []
    env = LocalEnvironment("batches", buffer_size=64)
    env.from_collection(range(100)).map(BatchRecorder).collect()
    result = env.execute(timeout=30)
    assert sorted(result.collected()) == list(range(100))
    assert BatchRecorder.sizes and max(BatchRecorder.sizes) <= 8
    assert sum(BatchRecorder.sizes) == 100


def test_max_wait_fills_batches_from_a_slow_source() -> None:
    BatchRecorder.sizes = []

    def slow() -> Any:
        for i in range(12):
            time.sleep(0.002)
            yield i

    env = LocalEnvironment("wait", buffer_size=1, chaining=False)
    env.from_source(slow).map(
        BatchRecorder, contract={"batch_size": 4, "max_wait_ms": 200}
    ).collect()
    result = env.execute(timeout=30)
    assert sorted(result.collected()) == list(range(12))
    # items trickle in one by one, yet the operator saw filled batches
    assert max(BatchRecorder.sizes) == 4 and len(BatchRecorder.sizes) <= 6


def test_operator_error_names_operator_replica_item_and_key() -> None:
    def explode(item: dict[str, int]) -> dict[str, int]:
        if item["v"] == 7:
            raise ValueError("seven")
        return item

    env = LocalEnvironment("boom")
    items = [{"k": f"user{i % 3}", "v": i} for i in range(20)]
    env.from_collection(items).key_by("k").map(explode, parallelism=2).collect()
    with pytest.raises(JobFailed) as info:
        env.execute(timeout=30)
    cause = info.value.cause
    assert isinstance(cause, OperatorFailure)
    assert cause.operator == "explode" and cause.replica.startswith("explode#")
    assert cause.key == "user1" and cause.item == {"k": "user1", "v": 7}
    message = str(cause)
    assert "explode" in message and "seven" in message and "'user1'" in message


def test_dead_letter_keeps_every_item(tmp_path: Path) -> None:
    def parse(text: str) -> int:
        return int(text)

    env = LocalEnvironment(
        "dead",
        dead_letter_sink="jsonl",
        dead_letter_config={"path": str(tmp_path / "dead.jsonl")},
    )
    env.from_collection(["1", "x", "3", "y"]).map(
        parse, on_error="dead-letter"
    ).collect()
    result = env.execute(timeout=30)
    assert sorted(result.collected()) == [1, 3]
    assert sorted(d["item"] for d in result.dead_letters) == ["x", "y"]
    record = result.dead_letters[0]
    assert record["operator"] == "parse" and "ValueError" in record["error"]
    assert "Traceback" in record["traceback"]
    lines = (tmp_path / "dead.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["item"] for line in lines) == ["x", "y"]
    assert result.metrics["operators"]["parse"]["dead_letters"] == 2


def test_cancel_stops_promptly() -> None:
    class Endless(SourceFunction):
        def run(self, context: OperatorContext) -> Any:
            i = 0
            while True:
                i += 1
                yield i

    class Slow(SinkFunction):
        def sink(self, item: Any) -> None:
            time.sleep(0.001)

    env = LocalEnvironment("endless", queue_capacity=2, buffer_size=4)
    env.from_source(Endless).map(double).sink(Slow, parallelism=2)
    job = env.submit()
    time.sleep(0.2)
    assert job.status() == "running"
    started = time.perf_counter()
    job.cancel()
    result = job.wait(timeout=10)
    assert time.perf_counter() - started < 5
    assert result.status == "cancelled"
    names = {t.name for t in threading.enumerate()}
    assert not any(n.startswith("sage-") and "endless" in n for n in names)


def test_jsonl_and_text_sources_and_sinks(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(50)))
    out = tmp_path / "out.jsonl"
    env = LocalEnvironment("files")
    env.from_source("jsonl", path=str(src), parallelism=2).map(
        lambda d: {"n": d["n"] * 10}
    ).sink("jsonl", path=str(out), parallelism=3)
    env.execute(timeout=30)
    got = sorted(json.loads(line)["n"] for line in out.read_text().splitlines())
    assert got == [i * 10 for i in range(50)]


def test_malformed_jsonl_line_is_named(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"n": 1}\n{oops\n')
    env = LocalEnvironment("badfile")
    env.from_source("jsonl", path=str(src)).collect()
    with pytest.raises(JobFailed, match=r"bad\.jsonl:2: not a JSON value"):
        env.execute(timeout=30)


def test_metrics_and_traces_follow_packets(tmp_path: Path) -> None:
    trace_file = tmp_path / "traces.jsonl"
    env = LocalEnvironment(
        "traced",
        chaining=False,
        trace_every=1,
        trace_path=str(trace_file),
        buffer_size=16,
    )
    env.from_collection(range(200)).map(double, parallelism=2).collect()
    result = env.execute(timeout=30)
    assert len(result.collected()) == 200
    records = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert records and all(r["outcome"] == "sink" for r in records)
    hops = records[0]["hops"]
    assert [h["task"].split("#")[0] for h in hops] == ["double", "collect"]
    for hop in hops:
        assert hop["queue_wait_s"] >= 0 and hop["service_s"] >= 0
    replicas = result.metrics["replicas"]
    assert replicas["collect#0"]["queue"]["capacity"] == 64
    assert replicas["collect#0"]["items_in"] == 200


def test_operator_config_reaches_function_and_bad_config_is_named() -> None:
    class Scale(MapFunction):
        def __init__(self, *, factor: int) -> None:
            super().__init__(factor=factor)
            self.factor = factor

        def map(self, item: int) -> int:
            return item * self.factor

    env = LocalEnvironment("cfg")
    env.from_collection([1, 2]).map(Scale, factor=5).collect()
    assert sorted(env.execute(timeout=30).collected()) == [5, 10]

    env = LocalEnvironment("cfg-bad")
    env.from_collection([1]).map(Scale, fctor=5).collect()
    with pytest.raises(Exception, match=r"operator 'Scale'.*rejected its config"):
        env.execute(timeout=30)


def test_function_instance_is_refused_with_advice() -> None:
    env = LocalEnvironment("inst")
    with pytest.raises(TypeError, match="pass the class and its config"):
        env.from_collection([1]).map(Tokenize())


def test_fused_chain_counts_attributes_errors_and_dead_letters() -> None:
    def check(x: int) -> int:
        if x == 13:
            raise ZeroDivisionError("thirteen")
        return x

    env = LocalEnvironment("fused")  # one task: source+map+filter+flat_map+collect
    s = env.from_collection(range(50)).map(check, on_error="dead-letter")
    s.filter(lambda x: x % 2 == 0).flat_map(lambda x: [x, x]).collect()
    assert len(env.compile().tasks) == 1
    result = env.execute(timeout=30)
    assert sorted(result.collected()) == sorted(
        [x for x in range(50) if x % 2 == 0 and x != 13] * 2
    )
    ops = result.metrics["operators"]
    assert (ops["check"]["items_in"], ops["check"]["items_out"]) == (50, 49)
    assert (ops["filter"]["items_in"], ops["filter"]["items_out"]) == (49, 25)
    assert ops["collect"]["items_in"] == 50
    (dead,) = result.dead_letters
    assert dead["item"] == 13 and dead["sequence"] == 13 and dead["operator"] == "check"

    env = LocalEnvironment("fused-fail")
    env.from_collection(range(50)).map(lambda x: x).map(check).collect()
    with pytest.raises(JobFailed) as info:
        env.execute(timeout=30)
    cause = info.value.cause
    assert isinstance(cause, OperatorFailure)
    assert (cause.operator, cause.sequence, cause.item) == ("check", 13, 13)


class Failing(Exception):
    """The error the operators of the executor-loop property raise."""


@settings(max_examples=25, deadline=None)
@given(
    items=st.lists(st.integers(0, 40), max_size=120),
    bad=st.sets(st.integers(0, 40), max_size=6),
    kind=st.sampled_from(["map", "filter", "flat_map", "sink"]),
    buffer_size=st.integers(1, 16),
)
def test_every_operator_kind_dead_letters_exactly_the_failing_items(
    items: list[int], bad: set[int], kind: str, buffer_size: int
) -> None:
    """One loop runs every kind of per-item operator: a failing item is
    dead-lettered with its sequence number and the loop goes on with the next one,
    in order (packets of any size, thread per replica so nothing is fused)."""
    seen: list[int] = []

    def step(x: int) -> Any:
        if x in bad:
            raise Failing(x)
        return {"map": x + 100, "filter": x % 2 == 0, "flat_map": [x, -x]}.get(kind)

    def sink(x: int) -> None:
        step(x)
        seen.append(x)

    env = LocalEnvironment("loops", chaining=False, buffer_size=buffer_size)
    s = env.from_collection(items)
    if kind == "sink":
        s.sink(sink, name="op", on_error="dead-letter")
    else:
        getattr(s, kind)(step, name="op", on_error="dead-letter").collect()
    result = env.execute(timeout=60)
    good = [x for x in items if x not in bad]
    expected = {
        "map": [x + 100 for x in good],
        "filter": [x for x in good if x % 2 == 0],
        "flat_map": [y for x in good for y in (x, -x)],
        "sink": [],
    }[kind]
    assert (seen if kind == "sink" else result.collected()) == (
        good if kind == "sink" else expected
    )
    dead = [(d["item"], d["sequence"]) for d in result.dead_letters]
    assert dead == [(x, i) for i, x in enumerate(items) if x in bad]


def test_metrics_show_the_step_in_progress() -> None:
    """While an operator is inside a step, its replica's metrics say since when and
    with how many items (finished-step counters move only when the step ends)."""
    release = threading.Event()

    def held(x: int) -> int:
        release.wait(30)
        return x

    env = LocalEnvironment("in-step", chaining=False, buffer_size=4)
    env.from_collection(range(4)).map(held, name="held").collect()
    job = env.submit()
    try:
        deadline = time.monotonic() + 20
        snap: dict = {}
        while time.monotonic() < deadline:
            snap = job.metrics()["replicas"].get("held#0", {})
            if snap.get("in_step_items") and snap.get("in_step_s", 0) > 0.05:
                break
            time.sleep(0.02)
        assert snap["in_step_items"] >= 1 and snap["items_in"] == 0
    finally:
        release.set()
    result = job.wait(30)
    assert sorted(result.collected()) == [0, 1, 2, 3]
    done = result.metrics["replicas"]["held#0"]
    assert done["in_step_items"] == 0 and done["items_in"] == 4
