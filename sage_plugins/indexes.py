"""Built-in vector-index backends: the native indexes, hnswlib and usearch.

All four follow ``sage_core.vector_index``'s conventions (uint64 ids, higher score =
more similar, duplicate ids rejected, ``allowed_ids`` filtering, one-file save).
Where a library lacks something the wrappers say how they provide it:

* hnswlib deletes by marking (the slot stays in the graph until the id is re-added);
  filtered search runs hnswlib's own filter callback during the graph walk, or scans
  the allowed vectors exactly when the allow-list is small;
* usearch's Python API has no filtered search, so ``allowed_ids`` scans the allowed
  vectors exactly (cost grows with the allow-list, results are exact).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from sage_core import hookimpl
from sage_core.vector_index import (
    MISSING_ID,
    DuplicateIdError,
    FlatIndex,
    IndexFormatError,
    IVFIndex,
    UnknownIdError,
    VectorIndex,
    VectorIndexError,
    as_ids,
    as_matrix,
    check_metric,
)
from sage_plugins.index_payloads import (
    MAX_THREADS,
    SEARCH_WIDTH,
    check_hnswlib,
    check_options,
    check_usearch,
    pack_live,
    unpack_live,
)

logger = logging.getLogger(__name__)

#: allow-lists up to this size are searched exactly instead of through the graph
EXACT_FILTER_LIMIT = 4096
#: bounds of the options (constructor arguments, and fields of a saved file)
_HNSW_OPTIONS = {
    "M": (2, 10_000),
    "ef_construction": SEARCH_WIDTH,
    "ef": SEARCH_WIDTH,
    "seed": (0, 2**64 - 1),
    "threads": (0, MAX_THREADS),
}
_USEARCH_OPTIONS = {
    "connectivity": (2, 10_000),
    "expansion_add": SEARCH_WIDTH,
    "expansion_search": SEARCH_WIDTH,
    "threads": (0, MAX_THREADS),
}


def _exact_top_k(
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


class _LiveIds:
    """The set of live ids, for the duplicate/unknown checks the libraries lack."""

    def __init__(self) -> None:
        self.ids: set[int] = set()

    def check_new(self, ids: npt.NDArray[np.uint64]) -> None:
        listed = ids.tolist()
        if len(set(listed)) != len(listed):
            raise DuplicateIdError("an id appears twice in the batch (nothing added)")
        if MISSING_ID in listed:
            raise ValueError("id 2**64-1 is reserved (it pads missing results)")
        clash = self.ids.intersection(listed)
        if clash:
            raise DuplicateIdError(
                f"id {min(clash)} is already in the index; remove it first to "
                f"replace it (nothing added)"
            )

    def check_known(self, ids: npt.NDArray[np.uint64]) -> None:
        missing = set(ids.tolist()) - self.ids
        if missing:
            raise UnknownIdError(
                f"id {min(missing)} is not in the index (nothing removed)"
            )


class HnswlibIndex(VectorIndex):
    """HNSW graph search by hnswlib.

    Args:
        dim: vector dimension.
        metric: ``"ip"``, ``"l2"`` or ``"cos"``.
        capacity: initial number of slots (grows by doubling; deleted ids keep
            their slot until re-added).
        M: graph degree.
        ef_construction: candidate list size while inserting.
        ef: candidate list size while searching (at least k is used).
        threads: threads for add/search; 0 uses every hardware thread.
        seed: hnswlib's random seed.
    """

    backend = "hnswlib"
    validates_files = True  # check_hnswlib reads the whole file first
    file_options: ClassVar[dict[str, tuple[int, int]] | None] = _HNSW_OPTIONS
    _SPACES: ClassVar[dict[str, str]] = {"ip": "ip", "l2": "l2", "cos": "cosine"}

    def __init__(
        self,
        dim: int,
        metric: str = "cos",
        *,
        capacity: int = 1024,
        M: int = 16,
        ef_construction: int = 200,
        ef: int = 64,
        threads: int = 0,
        seed: int = 100,
    ) -> None:
        import hnswlib

        self._dim = dim
        self._metric = check_metric(metric)
        self._opts = {
            "M": M,
            "ef_construction": ef_construction,
            "ef": ef,
            "seed": seed,
        }
        check_options(self.backend, _HNSW_OPTIONS, **self._opts, threads=threads)
        self.threads = threads
        self._impl = hnswlib.Index(space=self._SPACES[metric], dim=dim)
        self._impl.init_index(
            max_elements=max(1, capacity),
            M=M,
            ef_construction=ef_construction,
            random_seed=seed,
        )
        self._impl.set_ef(ef)
        self._live = _LiveIds()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    def __len__(self) -> int:
        return len(self._live.ids)

    def options(self) -> dict[str, Any]:
        return {**self._opts, "threads": self.threads}

    def _threads(self) -> int:
        return self.threads if self.threads > 0 else -1

    def add(self, ids: Any, vectors: Any) -> None:
        ids = as_ids(ids)
        x = as_matrix(vectors, self._dim)
        if len(ids) != len(x):
            raise ValueError(f"got {len(ids)} ids for {len(x)} vectors")
        self._live.check_new(ids)
        need = self._impl.get_current_count() + len(ids)
        if need > self._impl.get_max_elements():
            self._impl.resize_index(max(need, 2 * self._impl.get_max_elements()))
        self._impl.add_items(x, ids, num_threads=self._threads())
        self._live.ids.update(ids.tolist())

    def remove(self, ids: Any) -> int:
        ids = as_ids(ids)
        self._live.check_known(ids)
        unique = set(ids.tolist())
        for label in unique:
            self._impl.mark_deleted(label)
        self._live.ids.difference_update(unique)
        return len(unique)

    def _scores(self, dist: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self._metric == "l2":
            return (-dist).astype(np.float32)
        return (1.0 - dist).astype(np.float32)

    def search(
        self, queries: Any, k: int, *, allowed_ids: Any = None
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        if k < 1:
            raise ValueError("k must be at least 1")
        q = as_matrix(queries, self._dim, "queries")
        out_ids = np.full((len(q), k), MISSING_ID, dtype=np.uint64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        flt = None
        n = len(self._live.ids)
        if allowed_ids is not None:
            allowed = self._live.ids.intersection(as_ids(allowed_ids).tolist())
            if len(allowed) <= EXACT_FILTER_LIMIT:
                keys = np.fromiter(allowed, dtype=np.uint64, count=len(allowed))
                vecs = np.asarray(self._impl.get_items(keys), dtype=np.float32)
                return _exact_top_k(
                    vecs.reshape(-1, self._dim), keys, q, k, self.metric
                )
            flt = allowed.__contains__
            n = len(allowed)
        kk = min(k, n)
        if kk == 0 or len(q) == 0:
            return out_ids, out_scores
        # hnswlib calls a Python filter under the GIL: one thread is as fast.
        threads = 1 if flt is not None else self._threads()
        ef = self._opts["ef"]
        try:
            while True:
                self._impl.set_ef(ef)
                try:
                    labels, dist = self._impl.knn_query(
                        q, k=kk, num_threads=threads, filter=flt
                    )
                    break
                except RuntimeError as exc:  # fewer than kk reachable: widen
                    if ef >= n:
                        raise VectorIndexError(
                            f"hnswlib found fewer than {kk} results ({exc}); "
                            f"raise M or ef"
                        ) from exc
                    ef = min(n, ef * 4)
        finally:
            self._impl.set_ef(self._opts["ef"])
        out_ids[:, :kk] = labels.astype(np.uint64)
        out_scores[:, :kk] = self._scores(dist)
        return out_ids, out_scores

    def _to_bytes(self) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index.hnsw"
            self._impl.save_index(str(path))
            blob = path.read_bytes()
        live = np.fromiter(self._live.ids, dtype=np.uint64, count=len(self._live.ids))
        return pack_live(live, blob)

    @classmethod
    def _from_bytes(cls, payload: bytes, header: dict[str, Any]) -> HnswlibIndex:
        import hnswlib

        live, blob = unpack_live(payload)
        opts = {"M": 16, "ef_construction": 200, "ef": 64, "seed": 100, "threads": 0}
        opts.update(header.get("options", {}))
        check_options(cls.backend, _HNSW_OPTIONS, **opts)
        dim, metric = int(header["dim"]), check_metric(str(header["metric"]))
        slots = check_hnswlib(blob, dim=dim, live=live, options=opts)
        index = cls.__new__(cls)
        index._dim, index._metric = dim, metric
        index.threads = opts.pop("threads")
        index._opts = opts
        index._impl = hnswlib.Index(space=cls._SPACES[metric], dim=dim)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index.hnsw"
            path.write_bytes(blob)
            try:
                index._impl.load_index(str(path), max_elements=slots)
            except RuntimeError as exc:
                raise IndexFormatError(
                    f"hnswlib could not read the index: {exc}"
                ) from exc
        index._impl.set_ef(index._opts["ef"])
        index._live = _LiveIds()
        index._live.ids = set(live.tolist())
        return index


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
            return _exact_top_k(vecs, keys, q, k, self.metric)
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


@hookimpl
def register_vector_indexes(register: Any) -> None:
    """The built-in backends, by the names pipelines use (``index="..."``)."""
    register("native-flat", FlatIndex, description="exact SIMD scan (C++)")
    register("native-ivf", IVFIndex, description="inverted lists over k-means (C++)")
    register("hnswlib", HnswlibIndex, description="HNSW graph (hnswlib)")
    register("usearch", UsearchIndex, description="HNSW graph (usearch)")
