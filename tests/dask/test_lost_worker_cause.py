"""A lost worker is named as the cause even when a peer's failed send is seen first.

When a worker dies, the replica sending to it usually reports a ``TransportError``
(connection reset) before the scheduler has removed the worker. The job must still
fail (or restart) because of ``WorkerLost``, naming the worker and its replicas,
not because of the failed send. The scheduler's answers are scripted here; the
real race is exercised by ``test_cluster_processes.py::
test_lost_worker_fails_the_job_clearly``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from sage_core.runtime import supervise
from sage_core.runtime.operators import OperatorFailure
from sage_core.runtime.supervise import Supervision, WorkerLost
from sage_core.runtime.transport import TransportError


class ScriptedSchedulerDouble:
    """Answers ``sage_job_update`` with the lost workers of a script, one per call."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.calls = 0

    async def sage_job_update(self, **_: Any) -> list[str]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return answer


class NoRestartRecoveryDouble:
    """A restart strategy that never restarts, without checkpoints."""

    store = None
    stats = SimpleNamespace(restarts=0)

    def restart_delay(self, exc: BaseException) -> None:
        return None


def _supervision(scheduler: ScriptedSchedulerDouble, failure: Exception) -> Any:
    sup: Any = Supervision()
    sup.client = SimpleNamespace(scheduler=scheduler)
    sup.job_id = "j"
    sup.recovery = NoRestartRecoveryDouble()
    sup._status, sup._error = "running", None
    sup._live, sup._lost = {}, set()
    sup._where = {"src#0": "tcp://a", "victim#0": "tcp://b"}
    sup._failures = [failure]
    return sup


RUNS = {object(): "src#0", object(): "victim#0"}


def test_a_failed_send_then_the_scheduler_reporting_the_worker_names_worker_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervise, "LOST_GRACE_S", 10.0)
    scheduler = ScriptedSchedulerDouble([[], [], ["tcp://b"]])
    sup = _supervision(
        scheduler, TransportError("sending to victim#0 failed: connection reset")
    )
    asyncio.run(sup._confirm_lost(supervise._perf(), RUNS))
    sup._decide()
    assert isinstance(sup._error, WorkerLost)
    assert "tcp://b" in str(sup._error) and "victim#0" in str(sup._error)
    assert "src#0" not in str(sup._error)
    assert sup._lost == {"tcp://b"} and sup._status == "failed"
    assert scheduler.calls == 3


def test_a_failed_send_with_no_worker_lost_stays_a_transport_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervise, "LOST_GRACE_S", 0.3)
    scheduler = ScriptedSchedulerDouble([[]])
    sup = _supervision(scheduler, TransportError("the receiving replica has stopped"))
    asyncio.run(sup._confirm_lost(supervise._perf(), RUNS))
    sup._decide()
    assert isinstance(sup._error, TransportError)
    assert scheduler.calls >= 1 and not sup._lost


def test_workers_of_other_jobs_are_not_blamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "LOST_GRACE_S", 0.3)
    sup = _supervision(
        ScriptedSchedulerDouble([["tcp://elsewhere"]]), TransportError("reset")
    )
    asyncio.run(sup._confirm_lost(supervise._perf(), RUNS))
    sup._decide()
    assert isinstance(sup._error, TransportError)


def test_an_operator_failure_stays_the_cause_without_asking() -> None:
    scheduler = ScriptedSchedulerDouble([["tcp://b"]])
    failure = OperatorFailure(
        operator="victim",
        replica="victim#0",
        sequence=1,
        item=1,
        key=None,
        cause=ValueError("x"),
    )
    sup = _supervision(scheduler, failure)
    asyncio.run(sup._confirm_lost(supervise._perf(), RUNS))
    sup._decide()
    assert sup._error is failure and scheduler.calls == 0
