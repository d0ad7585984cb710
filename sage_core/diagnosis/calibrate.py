"""Service samples from calibration runs: batch sizes the baseline never saw.

A baseline run measures each operator at the batch sizes it happened to run. An
operator that always gets full batches (a bottleneck engine stage, say) is measured
at one size only, and then ``ServiceModel`` can only assume its cost grows in
proportion to the size: no fixed cost per call, so two concurrent calls to a
batching engine are predicted to take as long as one after the other. A short
calibration run of the same pipeline at another batch size (``generate`` at
``batch_size=16`` beside a baseline at 8) measures that curve.

``extend_service`` adds such a run's samples to the baseline's model at the sizes
the baseline has fewer than ``MIN_SAMPLES`` of. Only operators that ran with as
many replicas in both runs are taken (the concurrency an engine saw, and the share
of a worker's CPU a replica had, are then alike); the baseline's own sizes,
placement, traces and duration stay as they are. ``sage whatif JOB --calibrate-with
JOB2``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from sage_core.diagnosis.model import (
    MIN_SAMPLES,
    DiagnosisError,
    JobModel,
    ServiceModel,
)

__all__ = ["extend_service"]


def extend_service(model: JobModel, runs: Sequence[JobModel]) -> JobModel:
    """``model`` with the service samples ``runs`` measured at batch sizes it lacks
    (see the module docstring).

    Raises:
        DiagnosisError: a run shares no task (same name, operators and replica
            count) with ``model``.
    """
    if not runs:
        return model
    out = copy.copy(model)
    out.tasks = [copy.copy(t) for t in model.tasks]
    for run in runs:
        theirs = {
            (t.name, tuple(t.operators), len(t.replicas)): t
            for t in run.tasks
            if not t.is_source
        }
        matched = False
        for task in out.tasks:
            other = theirs.get((task.name, tuple(task.operators), len(task.replicas)))
            if other is None:
                continue
            matched = True
            task.service = _merged(task.service, other.service)
        if not matched:
            raise DiagnosisError(
                f"job {run.job} shares no operator with job {model.job} (the same "
                f"name, operators and number of replicas): it cannot calibrate it"
            )
    return out


def _merged(own: ServiceModel, other: ServiceModel) -> ServiceModel:
    """``own`` plus ``other``'s samples at the sizes ``own`` has too few of."""
    by = dict(own.by_size)
    for k, samples in other.by_size.items():
        if len(by.get(k, ())) < MIN_SAMPLES:
            by[k] = tuple(sorted((*by.get(k, ()), *samples)))
    return ServiceModel(dict(sorted(by.items())))
