"""Built-in job admission policies (see ``sage_core.runtime.admission``)."""

from __future__ import annotations

from typing import Any

from sage_core.runtime.admission import (
    AdmissionDecision,
    AdmissionError,
    AdmissionPolicy,
    AdmissionView,
    JobView,
)


def _decision(
    policy: AdmissionPolicy, job: JobView, view: AdmissionView, ok: bool, why: str,
    **facts: Any,
) -> AdmissionDecision:  # fmt: skip
    return AdmissionDecision(job.id, ok, why, policy.name, view.now, facts)


class ImmediateAdmission(AdmissionPolicy):
    """Every job starts as soon as it is submitted."""

    name = "immediate"

    def decide(self, job: JobView, view: AdmissionView) -> AdmissionDecision:
        return _decision(self, job, view, True, "immediate: every job starts at once")


class StaggeredAdmission(AdmissionPolicy):
    """Jobs start at least ``delta_s`` seconds apart."""

    name = "staggered"

    def __init__(self, *, delta_s: float = 5.0) -> None:
        if float(delta_s) < 0:
            raise AdmissionError(f"staggered: delta_s must be >= 0, got {delta_s}")
        self.delta_s = float(delta_s)

    def options(self) -> dict[str, Any]:
        return {"delta_s": self.delta_s}

    def decide(self, job: JobView, view: AdmissionView) -> AdmissionDecision:
        if view.last_admitted is None:
            return _decision(self, job, view, True, "first job: nothing to stagger")
        since = view.now - view.last_admitted
        if since >= self.delta_s:
            return _decision(
                self, job, view, True,
                f"{since:.1f} s since the last start >= delta {self.delta_s:g} s",
                since_s=since,
            )  # fmt: skip
        return _decision(
            self, job, view, False,
            f"only {since:.1f} s since the last start < delta {self.delta_s:g} s",
            since_s=since,
        )  # fmt: skip


class UtilisationAdmission(AdmissionPolicy):
    """Jobs start while the workers' measured CPU use is below ``rho`` (and at most
    ``max_running`` run); the rest wait. At least one job always runs."""

    name = "utilisation"

    def __init__(self, *, rho: float = 0.8, max_running: int | None = None) -> None:
        if not 0 < float(rho) <= 1:
            raise AdmissionError(f"utilisation: rho must be in (0, 1], got {rho}")
        if max_running is not None and int(max_running) < 1:
            raise AdmissionError("utilisation: max_running must be >= 1")
        self.rho = float(rho)
        self.max_running = None if max_running is None else int(max_running)

    def options(self) -> dict[str, Any]:
        return {"rho": self.rho, "max_running": self.max_running}

    def decide(self, job: JobView, view: AdmissionView) -> AdmissionDecision:
        n, u = len(view.running), view.utilisation
        if n == 0:
            return _decision(self, job, view, True, "no job running", utilisation=u)
        if self.max_running is not None and n >= self.max_running:
            return _decision(
                self, job, view, False,
                f"{n} jobs running = max_running {self.max_running}", utilisation=u,
            )  # fmt: skip
        if u is None:
            return _decision(
                self, job, view, False, "no utilisation measured yet", utilisation=u
            )
        ok = u < self.rho
        cmp = "<" if ok else ">="
        return _decision(
            self, job, view, ok, f"utilisation {u:.2f} {cmp} rho {self.rho:g}",
            utilisation=u,
        )  # fmt: skip


class FairShareAdmission(AdmissionPolicy):
    """Each owner runs at most ``slots`` jobs at once; the rest of theirs wait."""

    name = "fair-share"

    def __init__(self, *, slots: int = 1) -> None:
        if int(slots) < 1:
            raise AdmissionError(f"fair-share: slots must be >= 1, got {slots}")
        self.slots = int(slots)

    def options(self) -> dict[str, Any]:
        return {"slots": self.slots}

    def decide(self, job: JobView, view: AdmissionView) -> AdmissionDecision:
        mine = sum(1 for j in view.running if j.owner == job.owner)
        who = job.owner or "(no owner)"
        ok = mine < self.slots
        cmp = "<" if ok else ">="
        return _decision(
            self, job, view, ok, f"{who} runs {mine} {cmp} {self.slots} slots",
            running=mine,
        )  # fmt: skip


POLICIES: tuple[type[AdmissionPolicy], ...] = (
    ImmediateAdmission,
    StaggeredAdmission,
    UtilisationAdmission,
    FairShareAdmission,
)
