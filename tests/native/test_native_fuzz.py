"""Fuzzing every native binding and its wrapper over argument ranges (sizes, k,
dims, timeouts, dtypes, shapes, memory layouts, huge and negative integers, edited
index payloads): each call returns or raises a named exception, never crashes.

The examples run in child processes (a crash must not take the test run down),
many per child to keep the cost low; SAGE_FUZZ_EXAMPLES scales them up.
"""

from __future__ import annotations

import os

import pytest

from .isolated import assert_clean_exit, run_python

pytestmark = pytest.mark.native

SCALE = int(os.environ.get("SAGE_FUZZ_EXAMPLES", "1"))


@pytest.mark.parametrize(
    ("group", "examples"), [("queue", 200), ("index", 200), ("payload", 250)]
)
def test_bindings_return_or_raise_named_errors(group: str, examples: int) -> None:
    proc = run_python(
        f"import fuzz_bindings; fuzz_bindings.main({group!r}, {examples * SCALE})",
        timeout=300 * SCALE,
    )
    assert_clean_exit(proc)
    assert f"{group}: {examples * SCALE} examples passed" in proc.stdout
