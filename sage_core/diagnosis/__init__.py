"""Diagnosis of jobs from what they recorded: what-if prediction, bottleneck
attribution and placement replay (``docs/ARCHITECTURE.md`` section 7).

Reads job records, plans, metrics and traces; never runtime internals.
"""

from __future__ import annotations

from sage_core.diagnosis.attribute import diagnose
from sage_core.diagnosis.calibrate import extend_service, pool_runs
from sage_core.diagnosis.model import (
    DiagnosisError,
    JobModel,
    ServiceModel,
    job_model,
    record_of,
)
from sage_core.diagnosis.replay import replay
from sage_core.diagnosis.sim import SimResult, simulate
from sage_core.diagnosis.whatif import Change, predict

__all__ = [
    "Change",
    "DiagnosisError",
    "JobModel",
    "ServiceModel",
    "SimResult",
    "diagnose",
    "extend_service",
    "job_model",
    "pool_runs",
    "predict",
    "record_of",
    "replay",
    "simulate",
]
