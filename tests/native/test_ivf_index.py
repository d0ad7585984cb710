"""IVFIndex: training, recall against brute force, incremental adds, removal, filters."""

from __future__ import annotations

import numpy as np
import pytest

from sage_core import _reference
from sage_core.vector_index import (
    MISSING_ID,
    DuplicateIdError,
    FlatIndex,
    IndexNotTrainedError,
    IVFIndex,
    UnknownIdError,
)

from .index_helpers import assert_same_topk, clustered, kernel_names, kernels, recall

pytestmark = pytest.mark.native


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = clustered(6000, 32, clusters=40, seed=5)
    q = clustered(200, 32, clusters=40, seed=5)[:200] + 0.05
    return x, q.astype(np.float32)


@pytest.mark.parametrize("metric", ["ip", "l2", "cos"])
def test_probing_every_list_is_exact(metric: str, data: tuple) -> None:
    x, q = data
    ivf = IVFIndex(32, metric, nlist=30, nprobe=30, seed=1)
    ivf.add(np.arange(len(x)), x)
    ref = _reference.ReferenceIndex(32, metric)
    ref.add(np.arange(len(x)), x)
    for kernel in kernel_names():
        with kernels(kernel):
            assert_same_topk(*ivf.search(q[:30], 10), *ref.search(q[:30], 10))


@pytest.mark.parametrize("metric", ["ip", "l2", "cos"])
def test_recall_grows_with_nprobe(metric: str, data: tuple) -> None:
    x, q = data
    ivf = IVFIndex(32, metric, nlist=64, seed=2)
    ivf.add(np.arange(len(x)), x)
    flat = FlatIndex(32, metric)
    flat.add(np.arange(len(x)), x)
    truth = flat.search(q, 10)[0]
    recalls = [recall(ivf.search(q, 10, nprobe=p)[0], truth) for p in (1, 4, 16, 64)]
    assert recalls == sorted(recalls)
    assert recalls[2] >= 0.9
    assert recalls[3] == 1.0


def test_incremental_adds_are_assigned_without_retraining(data: tuple) -> None:
    x, q = data
    ivf = IVFIndex(32, "l2", nlist=40, nprobe=8, seed=3)
    ivf.add(np.arange(2000), x[:2000])
    sizes_before = sum(ivf.list_sizes())
    ivf.add(np.arange(2000, 6000), x[2000:])
    assert ivf.nlist == 40 and sum(ivf.list_sizes()) == sizes_before + 4000
    flat = FlatIndex(32, "l2")
    flat.add(np.arange(6000), x)
    assert recall(ivf.search(q, 10)[0], flat.search(q, 10)[0]) >= 0.9


def test_untrained_small_first_batch_is_a_named_error() -> None:
    ivf = IVFIndex(8, "cos", nlist=16)
    with pytest.raises(IndexNotTrainedError, match="at least 16 training vectors"):
        ivf.add(np.arange(5), np.ones((5, 8)))
    assert len(ivf) == 0 and not ivf.trained
    ivf.train(clustered(400, 8, seed=1))
    ivf.add(np.arange(5), clustered(5, 8, seed=2))
    assert ivf.trained and len(ivf) == 5
    empty = IVFIndex(8, "ip")
    assert (empty.search(np.ones((2, 8)), 3)[0] == MISSING_ID).all()


def test_remove_and_compaction_keep_results_exact(data: tuple) -> None:
    x, q = data
    rng = np.random.default_rng(7)
    ivf = IVFIndex(32, "ip", nlist=20, nprobe=20)
    ivf.add(np.arange(3000), x[:3000])
    ref = _reference.ReferenceIndex(32, "ip")
    ref.add(np.arange(3000), x[:3000])
    for chunk in np.array_split(rng.permutation(3000)[:2500], 5):
        ivf.remove(chunk)
        ref.remove(chunk)
        assert_same_topk(*ivf.search(q[:20], 5), *ref.search(q[:20], 5))
    with pytest.raises(UnknownIdError):
        present = int(next(iter(ref.vectors)))
        ivf.remove([present, 10**12])
    assert present in ivf
    with pytest.raises(DuplicateIdError):
        ivf.add([int(next(iter(ref.vectors)))], x[:1])


@pytest.mark.parametrize("n_allowed", [3, 50, 2500])
def test_filtered_search_returns_only_allowed(n_allowed: int, data: tuple) -> None:
    x, q = data
    rng = np.random.default_rng(n_allowed)
    ivf = IVFIndex(32, "cos", nlist=64, nprobe=64)
    ivf.add(np.arange(len(x)), x)
    allowed = rng.choice(len(x), n_allowed, replace=False)
    ref = _reference.ReferenceIndex(32, "cos")
    ref.add(np.arange(len(x)), x)
    got = ivf.search(q[:10], 10, allowed_ids=allowed)
    assert_same_topk(*got, *ref.search(q[:10], 10, allowed_ids=allowed))
    # with few probes, a small allow-list is still searched exactly
    ivf.nprobe = 2
    if n_allowed <= 50:
        got = ivf.search(q[:10], 10, allowed_ids=allowed)
        assert_same_topk(*got, *ref.search(q[:10], 10, allowed_ids=allowed))
    ids = ivf.search(q[:10], 10, allowed_ids=allowed)[0]
    assert set(ids.ravel().tolist()) - {MISSING_ID} <= set(allowed.tolist())
    assert (ids[:, : min(10, n_allowed)] != MISSING_ID).all()


def test_concurrent_searches_adds_and_removes(data: tuple) -> None:
    import threading

    x, q = data
    ivf = IVFIndex(32, "l2", nlist=32, nprobe=4, threads=2)
    ivf.add(np.arange(1000), x[:1000])
    stop = threading.Event()
    bad: list[str] = []

    def searcher() -> None:
        while not stop.is_set():
            ids, scores = ivf.search(q[:16], 5)
            if (np.diff(scores, axis=1) > 1e-6).any() or (ids == MISSING_ID).any():
                bad.append("unsorted or short result")

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    for start in range(1000, 6000, 500):
        ivf.add(np.arange(start, start + 500), x[start : start + 500])
        ivf.remove(np.arange(start - 1000, start - 800))
    stop.set()
    for t in threads:
        t.join(30)
    assert not bad
    assert len(ivf) == 6000 - 10 * 200
