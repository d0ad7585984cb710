"""Stable key hashing: native vs reference, equal keys hash equally, across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core import _reference
from sage_core.channels import build_info, key_bytes, stable_hash

pytestmark = pytest.mark.native

keys = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.tuples(inner, inner) | st.tuples(inner),
    max_leaves=6,
)


@given(st.binary(max_size=300), st.integers(0, 2**64 - 1))
def test_native_hash_matches_reference(data: bytes, seed: int) -> None:
    from sage_core import _native

    assert _native.hash64(data, seed) == _reference.hash64(data, seed)


@given(keys)
def test_key_equal_in_python_hash_equal(key: object) -> None:
    assert 0 <= stable_hash(key) < 2**64
    if isinstance(key, bool):
        assert stable_hash(key) == stable_hash(int(key))
    if isinstance(key, float) and key.is_integer():
        assert stable_hash(key) == stable_hash(int(key))


def test_distinct_types_do_not_collide_by_encoding() -> None:
    assert key_bytes("1") != key_bytes(1) != key_bytes(b"1")
    assert key_bytes(("a", "b")) != key_bytes(("ab",))


def test_unhashable_key_type_is_named() -> None:
    with pytest.raises(TypeError, match="key of type list has no stable hash"):
        stable_hash([1, 2])


def test_hash_is_stable_across_processes(tmp_path: Path) -> None:
    sample = ["user-42", 7, ("tenant", 3), b"\x00\xff"]
    code = (
        "from sage_core.channels import stable_hash; "
        f"print([stable_hash(k) for k in {sample!r}])"
    )
    outputs = set()
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=True,
            timeout=60,
        )
        outputs.add(result.stdout)
    assert outputs == {f"{[stable_hash(k) for k in sample]}\n"}


def test_build_info_describes_the_build() -> None:
    info = build_info()
    assert set(info) >= {"version", "arch", "compiler", "simd", "nanobind"}
