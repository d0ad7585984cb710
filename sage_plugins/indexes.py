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
from sage_plugins.index_exact import exact_top_k
from sage_plugins.index_payloads import (
    MAX_THREADS,
    SEARCH_WIDTH,
    check_hnswlib,
    check_options,
    pack_live,
    unpack_live,
)
from sage_plugins.usearch_index import UsearchIndex

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
                return exact_top_k(vecs.reshape(-1, self._dim), keys, q, k, self.metric)
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


@hookimpl
def register_vector_indexes(register: Any) -> None:
    """The built-in backends, by the names pipelines use (``index="..."``)."""
    register("native-flat", FlatIndex, description="exact SIMD scan (C++)")
    register("native-ivf", IVFIndex, description="inverted lists over k-means (C++)")
    register("hnswlib", HnswlibIndex, description="HNSW graph (hnswlib)")
    register("usearch", UsearchIndex, description="HNSW graph (usearch)")
