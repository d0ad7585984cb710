"""The C++ indexes (``sage_core._native``) behind the VectorIndex interface."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from sage_core.common.extension import load_extension
from sage_core.vector_index.base import (
    DimensionMismatchError,
    DuplicateIdError,
    Ids,
    IndexFormatError,
    IndexNotTrainedError,
    Scores,
    UnknownIdError,
    VectorIndex,
    VectorIndexError,
    as_ids,
    as_matrix,
    check_k,
    check_metric,
)

if TYPE_CHECKING:
    from sage_core import _native
else:
    _native = load_extension()


class IndexCapacityError(VectorIndexError):
    """An add would put more rows in one native row store (a ``FlatIndex``, or one
    list of an ``IVFIndex``) than its uint32 row numbers address; split the data
    over several indexes (shards)."""


_native.install_errors(
    {
        "IndexFormatError": IndexFormatError,
        "DuplicateIdError": DuplicateIdError,
        "UnknownIdError": UnknownIdError,
        "DimensionMismatchError": DimensionMismatchError,
        "IndexNotTrainedError": IndexNotTrainedError,
        "IndexCapacityError": IndexCapacityError,
    }
)

LIMITS: dict[str, int] = dict(_native.limits())
"""Bounds the native indexes and queues enforce (``max_dim``, ``max_k``, ...)."""


def check_threads(threads: Any) -> int:
    """``threads`` as an int >= 0 (0: every CPU this process may run on).

    Raises:
        TypeError: not an integer.
        ValueError: negative.
    """
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"threads must be an integer, got {type(threads).__name__}")
    value = int(threads)
    if not 0 <= value <= 2**31 - 1:
        raise ValueError(
            f"threads must be between 0 (every CPU this process may run on) and "
            f"2**31-1, got {value}"
        )
    return value


def _matching_header(index: _NativeIndex, header: dict[str, Any]) -> None:
    """IndexFormatError unless the loaded index is what the file's header says."""
    for key, value in (("dim", index.dim), ("metric", index.metric)):
        if key in header and header[key] != value:
            raise IndexFormatError(
                f"the file's header says {key}={header[key]!r} but its payload "
                f"holds {key}={value!r}; the file is corrupt or was tampered with"
            )
    if "count" in header and header["count"] != len(index):
        raise IndexFormatError(
            f"the file's header says count={header['count']!r} but its payload "
            f"holds {len(index)} vectors; the file is corrupt or was tampered with"
        )


def _saved_threads(header: dict[str, Any]) -> int:
    """The ``threads`` option stored in a saved index's header (0 when absent)."""
    options = header.get("options", {})
    threads = options.get("threads", 0) if isinstance(options, dict) else None
    try:
        return check_threads(threads)
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"the saved options are invalid: {exc}") from None


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
        threads: threads per search; 0 uses every CPU this process may run on.

    Raises:
        ValueError: ``dim`` outside 1..``LIMITS["max_dim"]``, or ``threads`` < 0.
    """

    backend = "native-flat"
    file_options: ClassVar[dict[str, tuple[int, int]] | None] = {
        "threads": (0, 2**31 - 1)
    }

    def __init__(self, dim: int, metric: str = "cos", *, threads: int = 0) -> None:
        self.threads = check_threads(threads)
        self._impl = _native.FlatIndex(dim, check_metric(metric))

    def options(self) -> dict[str, Any]:
        return {"threads": self.threads}

    def add(self, ids: Any, vectors: Any) -> None:
        self._impl.add(as_ids(ids), as_matrix(vectors, self.dim))

    def search(
        self, queries: Any, k: int, *, allowed_ids: Any = None
    ) -> tuple[Ids, Scores]:
        q, allowed = self._search_args(queries, allowed_ids)
        ids, scores = self._impl.search(q, check_k(k), allowed, self.threads)
        return ids, scores

    @classmethod
    def _from_bytes(cls, payload: bytes, header: dict[str, Any]) -> FlatIndex:
        index = cls.__new__(cls)
        index.threads = _saved_threads(header)
        index._impl = _native.FlatIndex.from_bytes(payload)
        _matching_header(index, header)
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
        threads: threads per search/add; 0 uses every CPU this process may run on.

    Raises:
        ValueError: an option outside the bounds in ``LIMITS`` (``dim``, ``nlist``,
            ``nprobe``, ``train_iters``), or ``threads`` < 0.
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
        self.threads = check_threads(threads)
        self._impl = _native.IVFIndex(
            dim, check_metric(metric), nlist, nprobe, train_iters, max_train, seed
        )

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
        ids, scores = self._impl.search(
            q, check_k(k), allowed, self.threads, nprobe or 0
        )
        return ids, scores

    def list_sizes(self) -> list[int]:
        """Live vectors per inverted list (balance diagnostics)."""
        return list(self._impl.list_sizes())

    @classmethod
    def _from_bytes(cls, payload: bytes, header: dict[str, Any]) -> IVFIndex:
        index = cls.__new__(cls)
        index.threads = _saved_threads(header)
        index._impl = _native.IVFIndex.from_bytes(payload)
        _matching_header(index, header)
        return index
