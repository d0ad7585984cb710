"""Exact top-k over a small candidate set: the wrappers' filtered-search fallback."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sage_core.vector_index import MISSING_ID


def exact_top_k(
    vectors: npt.NDArray[np.float32],
    ids: npt.NDArray[np.uint64],
    queries: npt.NDArray[np.float32],
    k: int,
    metric: str,
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
    """Exact top-k of ``queries`` over a small candidate set, padded to k."""
    m = len(queries)
    out_ids = np.full((m, k), MISSING_ID, dtype=np.uint64)
    out_scores = np.full((m, k), -np.inf, dtype=np.float32)
    if len(ids) == 0:
        return out_ids, out_scores
    x = vectors.astype(np.float64)
    q = queries.astype(np.float64)
    if metric == "cos":
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
    scores = q @ x.T
    if metric == "l2":
        scores = 2 * scores - (x * x).sum(1)[None, :] - (q * q).sum(1)[:, None]
        scores = np.minimum(scores, 0.0)
    n = min(k, len(ids))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    out_ids[:, :n] = ids[order]
    out_scores[:, :n] = np.take_along_axis(scores, order, axis=1)
    return out_ids, out_scores
