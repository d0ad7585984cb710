"""Admission of jobs on a cluster: which submitted job starts now, which waits.

The scheduler's job manager asks its :class:`AdmissionPolicy` about each queued job
(highest priority first, then in submission order) whenever something changes and
at least every ``PUMP_S``; a policy answers with an :class:`AdmissionDecision`
(admitted or not, and why). Policies are plugins (``register_admission_policies``,
family ``admission-policy``): the built-ins are ``immediate``, ``staggered``,
``utilisation`` and ``fair-share`` (``schedulers/admission.py``). Decisions are kept
on the job (``sage jobs status``) and on its board record (``sage explain``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from sage_core.common.errors import SageError

#: how often queued jobs are reconsidered (seconds)
PUMP_S = 0.25


class AdmissionError(SageError, ValueError):
    """An admission policy got options it cannot use."""


@dataclass(frozen=True, slots=True)
class JobView:
    """What a policy knows of one job."""

    id: str
    owner: str
    priority: int
    submitted: float
    started: float | None = None


@dataclass(frozen=True, slots=True)
class AdmissionView:
    """The cluster when a decision is taken.

    Attributes:
        now: ``time.time()``.
        running: jobs admitted and not ended.
        queued: jobs waiting (the one decided on included).
        utilisation: the workers' mean CPU use, 0..1 (None: no worker reports it).
        last_admitted: when the last job was admitted (None: never).
    """

    now: float
    running: tuple[JobView, ...] = ()
    queued: tuple[JobView, ...] = ()
    utilisation: float | None = None
    last_admitted: float | None = None


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """Admitted or not, why, when and by which policy."""

    job: str
    admitted: bool
    reason: str
    policy: str = ""
    at: float = 0.0
    facts: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["facts"] = dict(self.facts)
        return out


class AdmissionPolicy:
    """Decides whether a queued job starts now.

    Subclasses set ``name`` and implement ``decide``; options arrive as keyword
    arguments (an unknown or bad one raises :class:`AdmissionError`).
    """

    name: ClassVar[str] = ""

    def decide(self, job: JobView, view: AdmissionView) -> AdmissionDecision:
        raise TypeError(f"{type(self).__name__} must implement decide()")

    def options(self) -> dict[str, Any]:
        """The policy's options (shown with its decisions)."""
        return {}


def create_admission_policy(name: str, **options: Any) -> AdmissionPolicy:
    """The admission policy registered as ``name``, built with ``options``.

    Raises:
        UnknownPluginError: no such policy (close matches named).
        AdmissionError: the options do not fit the policy.
    """
    from sage_core.plugins import resolve

    cls = resolve("admission-policy", name).obj
    try:
        policy = cls(**options)
    except TypeError as exc:
        raise AdmissionError(f"admission policy {name!r}: {exc}") from None
    if not isinstance(policy, AdmissionPolicy):
        raise AdmissionError(f"admission policy {name!r} is not an AdmissionPolicy")
    return policy


@dataclass(slots=True)
class _Waiting:
    job: JobView
    start: Callable[[], None]
    record: Callable[[AdmissionDecision], None]
    last: AdmissionDecision | None = None


class AdmissionQueue:
    """Jobs waiting for admission under one policy (thread-safe).

    ``add`` queues a job with its ``start`` callback and a ``record`` callback for
    its decisions (the first one, and each change between admitted and waiting);
    ``pump`` asks the policy about every queued job, highest priority first, and
    starts the admitted ones; ``ended`` frees a running job's place.
    """

    def __init__(
        self,
        policy: AdmissionPolicy,
        utilisation: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.policy = policy
        self.utilisation = utilisation
        self.running: dict[str, JobView] = {}
        self.last_admitted: float | None = None
        self._waiting: list[_Waiting] = []
        self._lock = threading.Lock()

    def add(
        self,
        job: JobView,
        start: Callable[[], None],
        record: Callable[[AdmissionDecision], None],
    ) -> None:
        with self._lock:
            self._waiting.append(_Waiting(job, start, record))
        self.pump()

    def remove(self, job_id: str) -> bool:
        """Take a waiting job out of the queue; whether it was waiting."""
        with self._lock:
            before = len(self._waiting)
            self._waiting = [w for w in self._waiting if w.job.id != job_id]
            return len(self._waiting) != before

    def ended(self, job_id: str) -> None:
        with self._lock:
            self.running.pop(job_id, None)
        self.pump()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def pump(self) -> None:
        admitted: list[_Waiting] = []
        with self._lock:
            if not self._waiting:
                return
            util = self.utilisation()
            order = sorted(
                self._waiting, key=lambda w: (-w.job.priority, w.job.submitted)
            )
            for w in order:
                view = AdmissionView(
                    now=time.time(),
                    running=tuple(self.running.values()),
                    queued=tuple(x.job for x in order if x not in admitted),
                    utilisation=util,
                    last_admitted=self.last_admitted,
                )
                decision = self.policy.decide(w.job, view)
                if w.last is None or w.last.admitted != decision.admitted:
                    w.record(decision)
                w.last = decision
                if decision.admitted:
                    admitted.append(w)
                    self.running[w.job.id] = w.job
                    self.last_admitted = view.now
            self._waiting = [w for w in self._waiting if w not in admitted]
        for w in admitted:
            w.start()
