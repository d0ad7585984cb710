"""What runs record for the diagnosis: service samples per batch size, source pull
time, routing keys, and the model built from them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sage_core import LocalEnvironment
from sage_core.diagnosis import job_model, record_of
from sage_core.observe.metrics import BATCH_SAMPLES, ReplicaMetrics


@given(st.lists(st.integers(1, 64), min_size=1, max_size=2000))
def test_the_service_sample_stays_bounded_and_holds_real_batches(
    sizes: list[int],
) -> None:
    m = ReplicaMetrics("op#0", "op", ["op"])
    for size in sizes:
        m.batches += 1
        m.note_batch(size, size * 1e-6)
    kept = m.snapshot()["batch_service"]
    assert len(kept) == min(len(sizes), BATCH_SAMPLES)
    assert all(size in sizes and s == size * 1e-6 for size, s in kept)


def test_a_local_run_feeds_the_model() -> None:
    env = LocalEnvironment("rec", chaining=False, buffer_size=8, trace_every=2)
    keyed = env.from_collection([{"k": i % 3, "v": i} for i in range(300)], name="src")
    keyed.key_by("k").map(lambda x: x, name="op", parallelism=2).sink(
        lambda x: None, name="sink"
    )
    job = env.submit()
    record = record_of(job.plan, job.wait(60))
    snaps = record["metrics"]["replicas"]
    assert sum(len(s["batch_service"]) for s in snaps.values()) > 0
    assert sum(snaps["src#0"]["keys"].values()) > 0
    assert record["traces"] and record["duration_s"] > 0
    model = job_model(record)
    assert [t.name for t in model.tasks] == ["src", "op", "sink"]
    assert model.source_items() == 300
    assert model.task("op").service.by_size
    shares = model.channels[0].shares
    assert set(shares) == {"op#0", "op#1"}
    assert abs(sum(shares.values()) - 1.0) < 1e-9
