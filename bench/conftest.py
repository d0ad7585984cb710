"""pytest options for the pytest-benchmark files under bench/."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--smoke``: tiny sizes and one round, to check the benchmark still runs (CI)."""
    parser.addoption(
        "--smoke",
        action="store_true",
        help="run the benchmarks at tiny sizes in seconds (figures mean nothing)",
    )
