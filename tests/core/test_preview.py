"""Previews of failing items in error messages stay short and never dump arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sage_core.common.preview import preview
from sage_core.runtime.operators import OperatorFailure

_items = st.recursive(
    st.none() | st.integers() | st.floats() | st.text(max_size=300),
    lambda inner: (
        st.lists(inner, max_size=30)
        | st.dictionaries(st.text(max_size=20), inner, max_size=30)
    ),
    max_leaves=200,
)


@given(item=_items, limit=st.integers(10, 400))
def test_preview_is_one_line_within_the_limit(item: Any, limit: int) -> None:
    text = preview(item, limit)
    assert len(text) <= limit and "\n" not in text


def test_arrays_show_shape_and_dtype_not_values() -> None:
    item = {"query": "q", "embedding": np.full(384, 0.5, np.float32)}
    text = preview(item)
    assert "ndarray(shape=(384,), dtype=float32)" in text and "0.5" not in text
    assert "1.5" in preview(np.float32(1.5))  # a scalar shows its value


def test_operator_failure_message_previews_the_item() -> None:
    failure = OperatorFailure(
        operator="retrieve",
        replica="retrieve#0",
        sequence=3,
        item={"embedding": np.zeros((2, 768), np.float32)},
        key=None,
        cause=ValueError("bad width"),
    )
    assert "ndarray(shape=(2, 768), dtype=float32)" in str(failure)
    assert "0., 0." not in str(failure)
