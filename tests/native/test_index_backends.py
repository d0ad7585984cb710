"""The four registered backends behave alike: same conventions, same errors, files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from sage_core import _reference
from sage_core.common.errors import UnknownPluginError
from sage_core.plugins import registry
from sage_core.vector_index import (
    MISSING_ID,
    DuplicateIdError,
    IndexFormatError,
    UnknownIdError,
    UntrustedIndexError,
    VectorIndex,
    create_index,
    load_index,
    read_index_header,
)

from .index_helpers import clustered, recall

pytestmark = pytest.mark.native

BACKENDS = ["native-flat", "native-ivf", "hnswlib", "usearch"]
OPTIONS = {"native-ivf": {"nlist": 16, "nprobe": 16}}


def make(name: str, dim: int, metric: str) -> VectorIndex:
    return create_index(name, dim=dim, metric=metric, **OPTIONS.get(name, {}))


def test_registry_lists_the_builtin_backends() -> None:
    assert set(BACKENDS) <= set(registry("vector-index"))
    with pytest.raises(UnknownPluginError, match="Did you mean 'usearch'"):
        create_index("usearh", dim=4)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("metric", ["ip", "l2", "cos"])
def test_same_scores_and_order_as_brute_force(name: str, metric: str) -> None:
    x = clustered(1500, 16, seed=11)
    q = clustered(40, 16, seed=12)
    index = make(name, 16, metric)
    index.add(np.arange(1500) + 10, x)
    ref = _reference.ReferenceIndex(16, metric)
    ref.add(np.arange(1500) + 10, x)
    ids, scores = index.search(q, 10)
    want_ids, _ = ref.search(q, 10)
    assert recall(ids, want_ids) >= 0.9  # graph indexes are approximate
    # whatever a backend returns, its score means the same thing
    _, full = ref.scores(q)
    pos = {int(i): j for j, i in enumerate(sorted(ref.vectors))}
    for row in range(len(q)):
        expect = [full[row, pos[int(i)]] for i in ids[row]]
        np.testing.assert_allclose(scores[row], expect, rtol=1e-4, atol=1e-3)
    assert (np.diff(scores, axis=1) <= 1e-5).all()


@pytest.mark.parametrize("name", BACKENDS)
def test_lifecycle_errors_filters_and_padding(name: str, tmp_path: Path) -> None:
    x = clustered(600, 8, seed=13)
    index = make(name, 8, "cos")
    index.add(np.arange(600), x)
    assert len(index) == 600 and index.dim == 8 and index.metric == "cos"
    with pytest.raises(DuplicateIdError):
        index.add([5], x[:1])
    with pytest.raises(DuplicateIdError):
        index.add([900, 900], x[:2])
    with pytest.raises(UnknownIdError):
        index.remove([1, 10_000])
    assert len(index) == 600
    assert index.remove([1, 2, 3]) == 3
    assert len(index) == 597
    ids, _ = index.search(x[:5], 20)
    assert not {1, 2, 3} & set(ids.ravel().tolist())
    index.add([2], x[2:3])  # a removed id can come back
    allowed = [2, 40, 41, 599, 123456]
    ids, scores = index.search(x[:4], 6, allowed_ids=allowed)
    assert set(ids[:, :4].ravel().tolist()) == {2, 40, 41, 599}
    assert (ids[:, 4:] == MISSING_ID).all() and np.isneginf(scores[:, 4:]).all()
    # save / load through the backend named in the file
    path = tmp_path / f"{name}.sidx"
    index.save(path)
    assert read_index_header(path)["backend"] == name
    if name == "usearch":  # its loader trusts the file: opening needs consent
        with pytest.raises(UntrustedIndexError, match="trusted=True"):
            load_index(path)
    again = load_index(path, trusted=name == "usearch")
    assert type(again) is type(index) and len(again) == len(index)
    np.testing.assert_array_equal(
        again.search(x[:10], 5)[0], index.search(x[:10], 5)[0]
    )
    clone = pickle.loads(pickle.dumps(index))
    np.testing.assert_array_equal(
        clone.search(x[:10], 5)[0], index.search(x[:10], 5)[0]
    )


@pytest.mark.parametrize("name", BACKENDS)
def test_more_results_than_vectors_are_padded(name: str) -> None:
    index = (
        make(name, 4, "l2")
        if name != "native-ivf"
        else create_index(name, dim=4, metric="l2", nlist=2)
    )
    index.add([1, 2, 3], np.eye(4, dtype=np.float32)[:3])
    ids, scores = index.search(np.eye(4, dtype=np.float32)[:1], 5)
    assert ids[0, 0] == 1 and scores[0, 0] == pytest.approx(0.0, abs=1e-5)
    assert (ids[0, 3:] == MISSING_ID).all() and np.isneginf(scores[0, 3:]).all()


def _saved(tmp_path: Path) -> Path:
    index = create_index("native-flat", dim=4, metric="ip")
    index.add(np.arange(100), np.random.default_rng(0).standard_normal((100, 4)))
    path = tmp_path / "flat.sidx"
    index.save(path)
    return path


def test_corrupt_and_foreign_files_raise_index_format_error(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped"
    data[-20] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="corrupt"):
        load_index(flipped)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IndexFormatError, match="truncated"):
        load_index(truncated)
    foreign = tmp_path / "foreign.npy"
    np.save(foreign, np.zeros(10))
    with pytest.raises(IndexFormatError, match="not a SAGE vector index"):
        load_index(foreign)
    newer = tmp_path / "newer"
    raw = bytearray(path.read_bytes())
    raw[8] = 99  # file format version
    newer.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="version 99"):
        load_index(newer)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(IndexFormatError):
        load_index(empty)


def test_backend_mismatch_and_native_checks(tmp_path: Path) -> None:
    from sage_core.vector_index import FlatIndex, IVFIndex

    path = tmp_path / "h.sidx"
    hnsw = create_index("hnswlib", dim=4)
    hnsw.add([1], np.ones((1, 4)))
    hnsw.save(path)
    with pytest.raises(IndexFormatError, match="holds a 'hnswlib' index"):
        FlatIndex.load(path)
    flat_bytes = FlatIndex(4)._to_bytes()
    with pytest.raises(IndexFormatError, match="another kind of index"):
        IVFIndex._from_bytes(flat_bytes, {})
    with pytest.raises(IndexFormatError, match="bad magic"):
        FlatIndex._from_bytes(b"x" * 64, {})
    damaged = bytearray(flat_bytes)
    damaged[20] ^= 1
    with pytest.raises(IndexFormatError, match="checksum"):
        FlatIndex._from_bytes(bytes(damaged), {})
    with pytest.raises(IndexFormatError):
        FlatIndex._from_bytes(flat_bytes[:10], {})


@pytest.mark.parametrize("limit", [10, 10_000])
def test_hnswlib_filters_inside_the_graph_walk(
    limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sage_plugins.indexes as backends

    monkeypatch.setattr(backends, "EXACT_FILTER_LIMIT", limit)
    x = clustered(3000, 12, seed=14)
    q = clustered(20, 12, seed=15)
    index = create_index("hnswlib", dim=12, metric="l2", ef=100)
    index.add(np.arange(3000), x)
    allowed = np.arange(0, 3000, 3)
    ids, _ = index.search(q, 10, allowed_ids=allowed)
    assert set(ids.ravel().tolist()) <= set(allowed.tolist())
    ref = _reference.ReferenceIndex(12, "l2")
    ref.add(np.arange(3000), x)
    assert recall(ids, ref.search(q, 10, allowed_ids=allowed)[0]) >= 0.9
