"""Other runs of the same pipeline taken into a baseline: repeats of it
(``pool_runs``: ``sage whatif JOB --also-run JOB2``) and calibration runs
(``extend_service``: ``sage whatif JOB --calibrate-with JOB2``), which give service
samples at batch sizes the baseline never saw.

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
placement, traces and duration stay as they are.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from typing import Any

from sage_core.diagnosis.model import (
    MIN_SAMPLES,
    DiagnosisError,
    JobModel,
    ServiceModel,
)

__all__ = ["extend_service", "pool_runs"]


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


def pool_runs(model: JobModel, others: Sequence[JobModel]) -> JobModel:
    """``model`` with other recorded runs of the same pipeline pooled in: the median
    seconds per source item of all the runs (times ``model``'s items), every run's
    sampled traces, and the service samples of the typical run (the one whose
    seconds per item is the median; the faster one of the middle two for an even
    count); placement stays ``model``'s. A short run's trace p99 rests on a few
    traces, so a prediction's latency calibration is steadier over several runs;
    and one run's service times can be far off its neighbours' (MiniLM in a Dask
    worker took 155-161 ms per batch of 8 in some runs of a benchmark and 86-97 ms
    in the others), so the first run named is not trusted to be typical. Service
    samples are not mixed across runs: runs differ in how saturated each worker
    was, so their samples are scaled by different ``deflation`` factors, and rare
    batch sizes that reach ``MIN_SAMPLES`` only when pooled would be drawn from a
    handful of batches.

    Raises:
        DiagnosisError: a run is of another pipeline (other tasks, operators,
            replicas or packet size).
    """
    if not others:
        return model
    shape = _shape(model)
    for other in others:
        if _shape(other) != shape:
            raise DiagnosisError(
                f"job {other.job} is not a run of the same pipeline as job "
                f"{model.job} (tasks, operators, replicas and buffer_size must match)"
            )
    runs = [model, *others]
    timed = sorted(
        (m.duration_s / m.source_items(), i)
        for i, m in enumerate(runs)
        if m.source_items()
    )
    pooled = copy.copy(model)
    if timed:
        pooled.duration_s = (
            statistics.median(t for t, _ in timed) * model.source_items()
        )
        typical = runs[timed[(len(timed) - 1) // 2][1]]
        pooled.tasks = [copy.copy(t) for t in typical.tasks]
        pooled.deflation = dict(typical.deflation)
        pooled.overhead_s = dict(typical.overhead_s)
    pooled.traces = [t for m in runs for t in m.traces]
    pooled.transport_s = None  # calibrated again on the pooled duration
    return pooled


def _shape(m: JobModel) -> tuple[Any, ...]:
    tasks = tuple((t.name, tuple(t.operators), len(t.replicas)) for t in m.tasks)
    return tasks, m.buffer_size
