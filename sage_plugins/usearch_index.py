"""The usearch backend (HNSW graph search by usearch) behind the VectorIndex interface.

usearch's Python API has no filtered search, so ``allowed_ids`` scans the allowed
vectors exactly (cost grows with the allow-list, results are exact). Its loader reads
node records unchecked, so saved usearch files open only with ``trusted=True``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from sage_core.vector_index import (
    MISSING_ID,
    DuplicateIdError,
    IndexFormatError,
    UnknownIdError,
    VectorIndex,
    as_ids,
    as_matrix,
    check_metric,
)
from sage_plugins.index_exact import exact_top_k
from sage_plugins.index_payloads import (
    MAX_THREADS,
    SEARCH_WIDTH,
    check_options,
    check_usearch,
)

_USEARCH_OPTIONS = {
    "connectivity": (2, 10_000),
    "expansion_add": SEARCH_WIDTH,
    "expansion_search": SEARCH_WIDTH,
    "threads": (0, MAX_THREADS),
}


class UsearchIndex(VectorIndex):
    """HNSW graph search by usearch.

    Args:
        dim: vector dimension.
        metric: ``"ip"``, ``"l2"`` or ``"cos"``.
        connectivity: graph degree.
        expansion_add: candidate list size while inserting.
        expansion_search: candidate list size while searching.
        threads: threads for add/search; 0 uses every hardware thread.
    """

    backend = "usearch"
    validates_files = False  # usearch reads node records unchecked: trust needed
    file_options: ClassVar[dict[str, tuple[int, int]] | None] = _USEARCH_OPTIONS

    def __init__(
        self,
        dim: int,
        metric: str = "cos",
        *,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        threads: int = 0,
    ) -> None:
        from usearch.index import Index, MetricKind

        kinds = {"ip": MetricKind.IP, "l2": MetricKind.L2sq, "cos": MetricKind.Cos}
        self._metric = check_metric(metric)
        self._opts = {
            "connectivity": connectivity,
            "expansion_add": expansion_add,
            "expansion_search": expansion_search,
        }
        check_options(self.backend, _USEARCH_OPTIONS, **self._opts, threads=threads)
        self.threads = threads
        self._impl = Index(ndim=dim, metric=kinds[metric], dtype="f32", **self._opts)

    @property
    def dim(self) -> int:
        return int(self._impl.ndim)

    @property
    def metric(self) -> str:
        return self._metric

    def __len__(self) -> int:
        return len(self._impl)

    def options(self) -> dict[str, Any]:
        return {**self._opts, "threads": self.threads}

    def add(self, ids: Any, vectors: Any) -> None:
        ids = as_ids(ids)
        x = as_matrix(vectors, self.dim)
        if len(ids) != len(x):
            raise ValueError(f"got {len(ids)} ids for {len(x)} vectors")
        if len(ids) == 0:
            return
        if len(np.unique(ids)) != len(ids):
            raise DuplicateIdError("an id appears twice in the batch (nothing added)")
        if (ids == np.uint64(MISSING_ID)).any():
            raise ValueError("id 2**64-1 is reserved (it pads missing results)")
        present = np.asarray(self._impl.contains(ids))
        if present.any():
            raise DuplicateIdError(
                f"id {int(ids[present][0])} is already in the index; remove it first "
                f"to replace it (nothing added)"
            )
        self._impl.add(ids, x, threads=self.threads)

    def remove(self, ids: Any) -> int:
        ids = np.unique(as_ids(ids))
        if len(ids) == 0:
            return 0
        present = np.asarray(self._impl.contains(ids))
        if not present.all():
            raise UnknownIdError(
                f"id {int(ids[~present][0])} is not in the index (nothing removed)"
            )
        self._impl.remove(ids)
        return len(ids)

    def search(
        self, queries: Any, k: int, *, allowed_ids: Any = None
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        if k < 1:
            raise ValueError("k must be at least 1")
        q = as_matrix(queries, self.dim, "queries")
        if allowed_ids is not None:
            keys = np.unique(as_ids(allowed_ids))
            if len(keys):
                keys = keys[np.asarray(self._impl.contains(keys))]
            vecs = (
                np.stack(self._impl.get(keys, dtype=np.float32))
                if len(keys)
                else np.empty((0, self.dim), dtype=np.float32)
            )
            return exact_top_k(vecs, keys, q, k, self.metric)
        out_ids = np.full((len(q), k), MISSING_ID, dtype=np.uint64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        if len(self) == 0 or len(q) == 0:
            return out_ids, out_scores
        found = self._impl.search(q, k, threads=self.threads)
        if hasattr(found, "counts"):  # BatchMatches
            counts = np.asarray(found.counts).reshape(len(q))
        else:  # a single query gives Matches, trimmed to what was found
            counts = np.array([len(found.keys)])
        keys = np.asarray(found.keys).reshape(len(q), -1)
        dist = np.asarray(found.distances, dtype=np.float32).reshape(len(q), -1)
        scores = -dist if self.metric == "l2" else 1.0 - dist
        for i, c in enumerate(counts):
            out_ids[i, :c] = keys[i, :c]
            out_scores[i, :c] = scores[i, :c]
        return out_ids, out_scores

    def _to_bytes(self) -> bytes:
        return bytes(self._impl.save())

    @classmethod
    def _from_bytes(cls, payload: bytes, header: dict[str, Any]) -> UsearchIndex:
        from usearch.index import Index

        opts = dict(header.get("options", {}))
        index = cls(int(header["dim"]), str(header["metric"]), **opts)
        check_usearch(
            payload,
            dim=index.dim,
            metric=index.metric,
            count=header.get("count"),
            options=index._opts,
        )
        try:
            restored = Index.restore(bytearray(payload))
        except Exception as exc:  # usearch raises plain RuntimeError/ValueError
            raise IndexFormatError(f"usearch could not read the index: {exc}") from exc
        if restored is None or restored.ndim != index.dim:
            raise IndexFormatError("usearch payload does not match the saved header")
        index._impl = restored
        return index
