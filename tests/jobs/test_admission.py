"""Admission policies and the queue that applies them: who starts, who waits, why."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core.common.errors import UnknownPluginError
from sage_core.runtime.admission import (
    AdmissionError,
    AdmissionQueue,
    JobView,
    create_admission_policy,
)


class Started:
    """Records which jobs the queue started and the decisions it recorded."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.at: dict[str, float] = {}
        self.decisions: dict[str, list] = {}

    def add(self, queue: AdmissionQueue, job: JobView) -> None:
        def start() -> None:
            self.order.append(job.id)
            self.at[job.id] = time.time()

        queue.add(job, start, self.decisions.setdefault(job.id, []).append)


def _job(i: int, owner: str = "", priority: int = 0) -> JobView:
    return JobView(f"j{i}", owner, priority, submitted=float(i))


def test_immediate_starts_everything():
    q, s = AdmissionQueue(create_admission_policy("immediate")), Started()
    for i in range(3):
        s.add(q, _job(i))
    assert s.order == ["j0", "j1", "j2"] and q.waiting == 0


def test_staggered_starts_jobs_delta_apart():
    q, s = AdmissionQueue(create_admission_policy("staggered", delta_s=0.2)), Started()
    for i in range(3):
        s.add(q, _job(i))
    assert s.order == ["j0"]
    assert [d.admitted for d in s.decisions["j1"]] == [False]
    assert "< delta 0.2 s" in s.decisions["j1"][0].reason
    while q.waiting:
        q.pump()
        time.sleep(0.01)
    assert s.order == ["j0", "j1", "j2"]
    assert s.at["j1"] - s.at["j0"] >= 0.2 and s.at["j2"] - s.at["j1"] >= 0.2
    assert [d.admitted for d in s.decisions["j2"]] == [False, True]


def test_utilisation_queues_while_the_cluster_is_busy():
    load = {"u": 0.95}
    policy = create_admission_policy("utilisation", rho=0.8)
    q, s = AdmissionQueue(policy, lambda: load["u"]), Started()
    s.add(q, _job(0))
    s.add(q, _job(1))
    assert s.order == ["j0"]  # one job always runs
    assert s.decisions["j1"][0].reason == "utilisation 0.95 >= rho 0.8"
    load["u"] = 0.3
    q.pump()
    assert s.order == ["j0", "j1"]
    assert s.decisions["j1"][-1].facts["utilisation"] == 0.3


def test_fair_share_gives_each_owner_its_slots_and_priority_goes_first():
    q, s = AdmissionQueue(create_admission_policy("fair-share", slots=1)), Started()
    s.add(q, _job(0, "ann"))
    s.add(q, _job(1, "ann"))
    s.add(q, _job(2, "ann", priority=5))
    s.add(q, _job(3, "bob"))
    assert s.order == ["j0", "j3"]
    assert s.decisions["j1"][0].reason == "ann runs 1 >= 1 slots"
    q.ended("j0")
    assert s.order == ["j0", "j3", "j2"]  # the higher priority of ann's waiting jobs
    q.ended("j2")
    assert s.order[-1] == "j1"


@settings(max_examples=50)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "end"]), st.sampled_from("abc")),
        max_size=40,
    ),
    st.integers(min_value=1, max_value=3),
)
def test_fair_share_never_runs_more_than_the_slots_per_owner(ops, slots):
    q, s = AdmissionQueue(create_admission_policy("fair-share", slots=slots)), Started()
    for n, (op, owner) in enumerate(ops):
        if op == "add":
            s.add(q, _job(n, owner))
        else:
            mine = [j for j in q.running.values() if j.owner == owner]
            if mine:
                q.ended(mine[0].id)
        for who in "abc":
            assert sum(j.owner == who for j in q.running.values()) <= slots
        if q.waiting:  # a waiting job's owner is at its limit
            waiting_owners = {j.owner for j in _waiting(q)}
            for who in waiting_owners:
                assert sum(j.owner == who for j in q.running.values()) == slots


def _waiting(q: AdmissionQueue) -> list[JobView]:
    return [w.job for w in q._waiting]


def test_bad_policies_and_options_are_named():
    with pytest.raises(UnknownPluginError, match="stagered"):
        create_admission_policy("stagered")
    with pytest.raises(AdmissionError, match="rho"):
        create_admission_policy("utilisation", rho=3)
    with pytest.raises(AdmissionError, match="unexpected keyword"):
        create_admission_policy("fair-share", slot=2)
