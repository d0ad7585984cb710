"""The C++ indexes (``sage_core._native``) behind the VectorIndex interface."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from sage_core.vector_index.base import (
    DimensionMismatchError,
    DuplicateIdError,
    Ids,
    IndexFormatError,
    IndexNotTrainedError,
    Scores,
    UnknownIdError,
    VectorIndex,
    as_ids,
    as_matrix,
    check_metric,
)

if TYPE_CHECKING:
    from sage_core import _native
else:  # imported by name: the compiled module is not a layer import-linter can see
    try:
        _native = importlib.import_module("sage_core._native")
    except ImportError as exc:  # pragma: no cover - only on broken installs
        raise ImportError(
            "sage_core._native is missing or stale: the C++ extension was not "
            "built. Rebuild it with `pip install --no-build-isolation -ve .` from "
            "the source tree (needs nanobind and scikit-build-core), or reinstall "
            "the package."
        ) from exc

_native.install_errors(
    {
        "IndexFormatError": IndexFormatError,
        "DuplicateIdError": DuplicateIdError,
        "UnknownIdError": UnknownIdError,
        "DimensionMismatchError": DimensionMismatchError,
        "IndexNotTrainedError": IndexNotTrainedError,
    }
)


class _NativeIndex(VectorIndex):
    """Shared plumbing of the C++ indexes (self._impl is the native object)."""

    _impl: Any
    threads: int
    validates_files = True  # from_bytes checks the payload in C++

    @property
    def dim(self) -> int:
        return int(self._impl.dim)

    @property
    def metric(self) -> str:
        return str(self._impl.metric)

    def __len__(self) -> int:
        return len(self._impl)

    def __contains__(self, id_: int) -> bool:
        return bool(self._impl.contains(id_))

    def memory_bytes(self) -> int:
        """Bytes held by the native index."""
        return int(self._impl.memory_bytes())

    def remove(self, ids: Any) -> int:
        return int(self._impl.remove(as_ids(ids)))

    def get(self, ids: Any) -> npt.NDArray[np.float32]:
        """Stored vectors of ``ids`` (unit length for ``cos``)."""
        return self._impl.get(as_ids(ids))

    def _to_bytes(self) -> bytes:
        return bytes(self._impl.to_bytes())

    def _search_args(self, queries: Any, allowed_ids: Any) -> tuple[Any, Any]:
        q = as_matrix(queries, self.dim, "queries")
        allowed = None if allowed_ids is None else as_ids(allowed_ids)
        return q, allowed


class FlatIndex(_NativeIndex):
    """Exact search over every vector with SIMD kernels (the native ``FlatIndex``).

    Args:
        dim: vector dimension.
        metric: ``"ip"``, ``"l2"`` or ``"cos"`` (vectors stored normalised).
        threads: threads per search; 0 uses every hardware thread.
    """

    backend = "native-flat"
    file_options: ClassVar[dict[str, tuple[int, int]] | None] = {
        "threads": (0, 2**31 - 1)
    }

    def __init__(self, dim: int, metric: str = "cos", *, threads: int = 0) -> None:
        self._impl = _native.FlatIndex(dim, check_metric(metric))
        self.threads = threads

    def options(self) -> dict[str, Any]:
        return {"threads": self.threads}

    def add(self, ids: Any, vectors: Any) -> None:
        self._impl.add(as_ids(ids), as_matrix(vectors, self.dim))

    def search(
        self, queries: Any, k: int, *, allowed_ids: Any = None
    ) -> tuple[Ids, Scores]:
        q, allowed = self._search_args(queries, allowed_ids)
        ids, scores = self._impl.search(q, k, allowed, self.threads)
        return ids, scores

    @classmethod
    def _from_bytes(cls, payload: bytes, header: dict[str, Any]) -> FlatIndex:
        index = cls.__new__(cls)
        index._impl = _native.FlatIndex.from_bytes(payload)
        index.threads = int(header.get("options", {}).get("threads", 0))
        return index


class IVFIndex(_NativeIndex):
    """Approximate search over inverted lists of k-means centroids (native).

    The first ``add`` trains the centroids on (a sample of) its batch unless
    ``train`` was called; later adds are assigned without retraining.

    Args:
        dim: vector dimension.
        metric: ``"ip"``, ``"l2"`` or ``"cos"``.
        nlist: number of lists; 0 picks round(sqrt(n)) of the training set.
        nprobe: lists scanned per query (more: higher recall, slower).
        train_iters: k-means iterations.
        max_train: most vectors k-means trains on (0: 256 * nlist).
        seed: seed of the training sample and initial centroids.
        threads: threads per search/add; 0 uses every hardware thread.
    """

    backend = "native-ivf"
    file_options: ClassVar[dict[str, tuple[int, int]] | None] = {
        "nlist": (0, 2**31 - 1),
        "nprobe": (0, 2**31 - 1),
        "threads": (0, 2**31 - 1),
    }

    def __init__(
        self,
        dim: int,
        metric: str = "cos",
        *,
        nlist: int = 0,
        nprobe: int = 8,
        train_iters: int = 10,
        max_train: int = 0,
        seed: int = 0,
        threads: int = 0,
    ) -> None:
        self._impl = _native.IVFIndex(
            dim, check_metric(metric), nlist, nprobe, train_iters, max_train, seed
        )
        self.threads = threads

    @property
    def nprobe(self) -> int:
        """Lists scanned per query by default."""
        return int(self._impl.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._impl.nprobe = value

    @property
    def nlist(self) -> int:
        return int(self._impl.nlist)

    @property
    def trained(self) -> bool:
        return bool(self._impl.trained)

    def options(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe, "threads": self.threads}

    def train(self, vectors: Any) -> None:
        """Train the centroids on ``vectors`` (before any add)."""
        self._impl.train(as_matrix(vectors, self.dim), self.threads)

    def add(self, ids: Any, vectors: Any) -> None:
        self._impl.add(as_ids(ids), as_matrix(vectors, self.dim), self.threads)

    def search(
        self,
        queries: Any,
        k: int,
        *,
        allowed_ids: Any = None,
        nprobe: int | None = None,
    ) -> tuple[Ids, Scores]:
        q, allowed = self._search_args(queries, allowed_ids)
        if nprobe is not None and nprobe < 1:
            raise ValueError("nprobe must be at least 1")
        ids, scores = self._impl.search(q, k, allowed, self.threads, nprobe or 0)
        return ids, scores

    def list_sizes(self) -> list[int]:
        """Live vectors per inverted list (balance diagnostics)."""
        return list(self._impl.list_sizes())

    @classmethod
    def _from_bytes(cls, payload: bytes, header: dict[str, Any]) -> IVFIndex:
        index = cls.__new__(cls)
        index._impl = _native.IVFIndex.from_bytes(payload)
        index.threads = int(header.get("options", {}).get("threads", 0))
        return index
