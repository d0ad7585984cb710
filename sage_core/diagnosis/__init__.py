"""Diagnosis of jobs from what they recorded: what-if prediction, bottleneck
attribution and placement replay (``docs/ARCHITECTURE.md`` section 7).

Reads job records, plans, metrics and traces; never runtime internals.
"""

from __future__ import annotations

from sage_core.diagnosis.model import (
    DiagnosisError,
    JobModel,
    ServiceModel,
    job_model,
    record_of,
)
from sage_core.diagnosis.sim import SimResult, simulate

__all__ = [
    "DiagnosisError",
    "JobModel",
    "ServiceModel",
    "SimResult",
    "job_model",
    "record_of",
    "simulate",
]
