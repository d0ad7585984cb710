"""FlatIndex: exact results against the numpy reference, filters, removal, threads."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core import _reference
from sage_core.vector_index import (
    MISSING_ID,
    DimensionMismatchError,
    DuplicateIdError,
    FlatIndex,
    UnknownIdError,
)

from .index_helpers import assert_same_topk, kernel_names, kernels

pytestmark = pytest.mark.native


@pytest.mark.parametrize("kernel", kernel_names())
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 300),
    dim=st.integers(1, 40),
    k=st.integers(1, 25),
    metric=st.sampled_from(["ip", "l2", "cos"]),
    m=st.integers(1, 14),
    seed=st.integers(0, 2**32 - 1),
)
def test_flat_matches_brute_force(
    kernel: str, n: int, dim: int, k: int, metric: str, m: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    ids = rng.choice(2**40, size=n, replace=False).astype(np.uint64)
    q = rng.standard_normal((m, dim)).astype(np.float32)
    ref = _reference.ReferenceIndex(dim, metric)
    ref.add(ids, x)
    with kernels(kernel):
        for threads in (1, 2):
            index = FlatIndex(dim, metric, threads=threads)
            index.add(ids, x)
            got = index.search(q, k)
            assert got[0].dtype == np.uint64 and got[1].dtype == np.float32
            assert_same_topk(*got, *ref.search(q, k))


@pytest.mark.parametrize("metric", ["ip", "l2", "cos"])
def test_filtered_search_is_not_post_filtering(metric: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5000, 24)).astype(np.float32)
    ids = np.arange(5000, dtype=np.uint64) * 3
    q = rng.standard_normal((7, 24)).astype(np.float32)
    index = FlatIndex(24, metric)
    index.add(ids, x)
    ref = _reference.ReferenceIndex(24, metric)
    ref.add(ids, x)
    allowed = ids[rng.choice(5000, 40, replace=False)]
    unknown = np.array([1, 2, 4], dtype=np.uint64)  # not in the index: ignored
    got = index.search(q, 10, allowed_ids=np.concatenate([allowed, unknown]))
    assert set(got[0].ravel().tolist()) <= set(allowed.tolist())
    assert_same_topk(*got, *ref.search(q, 10, allowed_ids=allowed))
    # fewer allowed than k: padded
    few_ids, few_scores = index.search(q, 5, allowed_ids=allowed[:3])
    assert (few_ids[:, 3:] == MISSING_ID).all() and np.isneginf(few_scores[:, 3:]).all()
    none_ids, _ = index.search(q, 5, allowed_ids=[])
    assert (none_ids == MISSING_ID).all()


def test_remove_tombstones_then_compacts() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1000, 8)).astype(np.float32)
    index = FlatIndex(8, "l2", threads=1)
    index.add(np.arange(1000), x)
    ref = _reference.ReferenceIndex(8, "l2")
    ref.add(np.arange(1000), x)
    for chunk in np.array_split(rng.permutation(1000)[:900], 9):
        assert index.remove(chunk) == len(chunk)
        ref.remove(chunk)
        assert len(index) == len(ref)
        assert_same_topk(*index.search(x[:20], 7), *ref.search(x[:20], 7))
    # removed ids are free again
    gone = next(i for i in range(1000) if i not in index)
    index.add([gone], x[:1])
    assert gone in index


def test_duplicate_and_unknown_ids_change_nothing() -> None:
    index = FlatIndex(4, "ip")
    index.add([1, 2], np.eye(4, dtype=np.float32)[:2])
    with pytest.raises(DuplicateIdError, match="already in the index"):
        index.add([3, 2], np.eye(4, dtype=np.float32)[:2])
    with pytest.raises(DuplicateIdError, match="twice in the batch"):
        index.add([5, 5], np.eye(4, dtype=np.float32)[:2])
    assert len(index) == 2 and 3 not in index
    with pytest.raises(UnknownIdError, match="not in the index"):
        index.remove([1, 99])
    assert len(index) == 2
    with pytest.raises(ValueError, match="reserved"):
        index.add([MISSING_ID], np.ones((1, 4), dtype=np.float32))


def test_bad_input_gets_named_errors() -> None:
    index = FlatIndex(4, "cos")
    with pytest.raises(DimensionMismatchError, match=r"shape \(n, 4\)"):
        index.add([1], np.ones((1, 5)))
    with pytest.raises(DimensionMismatchError):
        index.search(np.ones((2, 3)), 1)
    with pytest.raises(ValueError, match="ids for"):
        index.add([1, 2], np.ones((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        index.add([1], np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="non-negative"):
        index.add([-1], np.ones((1, 4)))
    with pytest.raises(TypeError, match="integers"):
        index.add([1.5], np.ones((1, 4)))
    with pytest.raises(ValueError, match="k must be between 1 and 65536"):
        index.search(np.ones((1, 4)), 0)
    with pytest.raises(ValueError, match="metric must be"):
        FlatIndex(4, "dot")
    assert len(index) == 0


def test_input_conversion_and_single_query() -> None:
    index = FlatIndex(3, "ip")
    index.add(np.array([7, 8], dtype=np.int32), [[1, 0, 0], [0, 1, 0]])  # float64 lists
    ids, scores = index.search([0.0, 2.0, 0.0], 1)  # one 1-D query
    assert ids.tolist() == [[8]] and scores.tolist() == [[2.0]]
    fortran = np.asfortranarray(np.eye(3, dtype=np.float32))
    assert index.search(fortran, 1)[0][:, 0].tolist() == [7, 8, 7]
    assert index.get([8]).tolist() == [[0.0, 1.0, 0.0]]


def test_searches_run_while_adds_happen() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20_000, 16)).astype(np.float32)
    index = FlatIndex(16, "ip", threads=2)
    index.add(np.arange(1000), x[:1000])
    errors: list[str] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            ids, scores = index.search(x[:8], 5)
            if not (np.diff(scores, axis=1) <= 1e-6).all() or (ids >= 20_000).any():
                errors.append("unsorted or unknown result")

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    for start in range(1000, 20_000, 1000):
        index.add(np.arange(start, start + 1000), x[start : start + 1000])
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(index) == 20_000


def test_pickles_through_bytes() -> None:
    index = FlatIndex(5, "l2", threads=1)
    x = np.random.default_rng(4).standard_normal((50, 5)).astype(np.float32)
    index.add(np.arange(50), x)
    clone = pickle.loads(pickle.dumps(index))
    assert isinstance(clone, FlatIndex) and clone.threads == 1
    np.testing.assert_array_equal(clone.search(x, 3)[0], index.search(x, 3)[0])


def test_build_info_names_the_dispatched_kernels() -> None:
    from sage_core.channels import build_info

    info = build_info()
    assert info["kernels"] in {"avx2+fma", "generic"}
    assert int(info["hardware_threads"]) >= 1
