"""Helpers shared by the index tests: data generators and a tie-aware comparison."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from sage_core import _native


def kernel_names() -> list[str]:
    """The kernel sets this CPU can run (the generic one always)."""
    names = ["generic"]
    if (
        "avx2" in _native.build_info().get("kernels", "")
        or _native.kernels() != "generic"
    ):
        names.append("avx2")
    return names


@contextmanager
def kernels(name: str) -> Iterator[None]:
    _native.set_kernels(name)
    try:
        yield
    finally:
        _native.set_kernels("auto")


def clustered(
    n: int, dim: int, *, clusters: int = 20, seed: int = 0, spread: float = 0.3
) -> np.ndarray:
    """Gaussian blobs around random centres (what embeddings look like, roughly)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * spread
    return (centres[labels] + noise).astype(np.float32)


def assert_same_topk(
    got_ids: np.ndarray,
    got_scores: np.ndarray,
    want_ids: np.ndarray,
    want_scores: np.ndarray,
    *,
    tol: float = 1e-3,
) -> None:
    """Same scores rank by rank; differing ids only where scores tie within tol."""
    assert got_ids.shape == want_ids.shape
    scale = max(
        1.0, float(np.nanmax(np.abs(want_scores[np.isfinite(want_scores)]), initial=1))
    )
    np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=tol * scale)
    for row in range(len(got_ids)):
        finite = np.isfinite(want_scores[row])
        kth = want_scores[row][finite][-1] if finite.any() else -np.inf
        for i, s in zip(got_ids[row], got_scores[row], strict=True):
            if i not in set(want_ids[row].tolist()):
                assert abs(s - kth) <= tol * scale, (row, i, s, kth)


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids found."""
    hits = [
        len(set(g.tolist()) & set(t.tolist())) for g, t in zip(got, truth, strict=True)
    ]
    return float(np.mean(hits) / truth.shape[1])
