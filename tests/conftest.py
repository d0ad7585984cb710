"""Settings for every test under tests/ (the root conftest.py also serves bench/)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Tests assert behaviour, never timings: a loaded CI box must not turn a slow example
# into a failure, so hypothesis runs without per-example deadlines.
settings.register_profile(
    "sage", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("sage")
