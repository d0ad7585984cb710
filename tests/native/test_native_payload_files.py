"""Saved native indexes are untrusted input: a file whose checksums are valid but
whose native payload has any field changed loads with IndexFormatError, or (for
fields that cannot hurt) loads and works; never a crash, a hang or a silently
broken index (NaN centroids, unbounded k-means)."""

from __future__ import annotations

import json

import pytest

from .isolated import assert_clean_exit, run_python

pytestmark = pytest.mark.native


def test_every_mutated_payload_field_is_refused_or_harmless() -> None:
    proc = run_python("import file_cases; file_cases.main()", timeout=240)
    assert_clean_exit(proc)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) > 150  # every field of every layout was tried
    wrong = [
        r
        for r in results
        if (r["must_fail"] and not r["outcome"].startswith("IndexFormatError"))
        or (not r["must_fail"] and r["outcome"] != "ok")
    ]
    assert not wrong, "\n".join(f"{r['case']}: {r['outcome']}" for r in wrong)
