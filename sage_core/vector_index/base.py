"""The vector-index interface, its errors, file format, and the by-name factory."""

from __future__ import annotations

import abc
import hashlib
import json
import numbers
import os
import struct
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from sage_core import plugins
from sage_core.common.errors import SageError

MISSING_ID = 2**64 - 1
METRICS = ("ip", "l2", "cos")
MAX_K = 2**16
"""Largest ``k`` a search accepts (the native indexes enforce the same bound)."""
FILE_MAGIC = b"SAGEVIF\n"
FILE_VERSION = 1

Ids = npt.NDArray[np.uint64]
Scores = npt.NDArray[np.float32]


class VectorIndexError(SageError):
    """Base class of the vector-index errors."""


class IndexFormatError(VectorIndexError):
    """A saved index is corrupt, truncated, of another backend or a newer format."""


class DuplicateIdError(VectorIndexError, ValueError):
    """``add`` got an id that is already in the index or repeated in the batch."""


class UnknownIdError(VectorIndexError, KeyError):
    """``remove``/``get`` got an id that is not in the index."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DimensionMismatchError(VectorIndexError, ValueError):
    """Vectors or queries whose width is not the index's ``dim``."""


class IndexNotTrainedError(VectorIndexError):
    """An IVF index needs centroids first (a larger first batch or ``train()``)."""


class UnsupportedByBackendError(VectorIndexError):
    """The chosen backend cannot do what was asked; the message says which can."""


class UntrustedIndexError(VectorIndexError):
    """A saved index of a backend whose loader is unsafe on hostile files."""


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is one of ``METRICS``; raise ValueError otherwise."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    return metric


def check_k(k: Any) -> int:
    """``k`` as an int in ``1..MAX_K``.

    Raises:
        TypeError: ``k`` is not an integer.
        ValueError: ``k`` is out of range (the message names the limit).
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    value = int(k)
    if not 1 <= value <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K} (MAX_K), got {value}")
    return value


def as_ids(ids: Any) -> Ids:
    """Ids as a C-contiguous 1-D uint64 array (integers in [0, 2**64-1))."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.uint64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and (arr < 0).any():
        raise ValueError("ids must be non-negative (they are uint64)")
    return np.ascontiguousarray(arr, dtype=np.uint64)


def as_matrix(vectors: Any, dim: int, what: str = "vectors") -> npt.NDArray[np.float32]:
    """Vectors as a C-contiguous float32 matrix with ``dim`` columns (1-D: one row)."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what} must have shape (n, {dim}) for this index, got {arr.shape}"
        )
    return arr


class VectorIndex(abc.ABC):
    """What every vector-index backend implements (see the module docstring).

    Subclasses set ``backend`` (their registry name) and implement the abstract
    methods; ``save``/``load``/pickling come from ``_to_bytes``/``_from_bytes``.
    Constructors take ``dim`` and ``metric`` first, then keyword-only options.
    """

    backend: ClassVar[str]
    #: True when ``_from_bytes`` checks every byte before a library reads it, so
    #: files from anyone may be loaded; otherwise ``load`` needs ``trusted=True``.
    validates_files: ClassVar[bool] = False
    #: options a saved file may carry, each an integer within inclusive bounds;
    #: ``None`` leaves the options to the backend (checked only if trusted).
    file_options: ClassVar[dict[str, tuple[int, int]] | None] = None

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Vector dimension."""

    @property
    @abc.abstractmethod
    def metric(self) -> str:
        """``"ip"``, ``"l2"`` or ``"cos"``."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of vectors in the index."""

    @abc.abstractmethod
    def add(self, ids: Any, vectors: Any) -> None:
        """Add ``vectors`` (n, dim) under new uint64 ``ids``."""

    @abc.abstractmethod
    def remove(self, ids: Any) -> int:
        """Remove ``ids``; return how many were removed."""

    @abc.abstractmethod
    def search(
        self, queries: Any, k: int, *, allowed_ids: Any = None
    ) -> tuple[Ids, Scores]:
        """Top-``k`` ``(ids, scores)`` per query, best first (higher = more similar)."""

    @abc.abstractmethod
    def options(self) -> dict[str, Any]:
        """Constructor options (JSON-friendly) to store alongside a saved index."""

    @abc.abstractmethod
    def _to_bytes(self) -> bytes:
        """The backend's own serialisation of the index."""

    @classmethod
    @abc.abstractmethod
    def _from_bytes(cls, payload: bytes, header: dict[str, Any]) -> VectorIndex:
        """Rebuild an index from ``_to_bytes`` output and the saved header."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to one file atomically (header + checksummed payload)."""
        payload = self._to_bytes()
        header = {
            "backend": self.backend,
            "dim": self.dim,
            "metric": self.metric,
            "count": len(self),
            "options": self.options(),
            "payload_bytes": len(payload),
            "payload_blake2b": hashlib.blake2b(payload, digest_size=16).hexdigest(),
        }
        head = json.dumps(header, sort_keys=True).encode()
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(FILE_MAGIC + struct.pack("<II", FILE_VERSION, len(head)) + head)
            f.write(payload)
        os.replace(tmp, target)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, trusted: bool = False
    ) -> VectorIndex:
        """Open an index this class saved.

        Every field of the header is checked against bounds and against the
        payload before the backend reads it. Backends whose own loader cannot be
        made safe by such checks (``validates_files`` is False: usearch, and
        plugins that do not declare otherwise) may crash or misbehave on a
        hostile file, so they open only files you trust, with ``trusted=True``.

        Raises:
            IndexFormatError: corrupt, hostile or foreign file, or saved by
                another backend.
            UntrustedIndexError: the backend needs ``trusted=True``.
        """
        from sage_core.vector_index.files import open_saved  # (imports this module)

        return open_saved(cls, path, trusted=trusted)

    def __reduce__(self) -> Any:
        return (_unpickle, (type(self), self._to_bytes(), self._header()))

    def _header(self) -> dict[str, Any]:
        return {"dim": self.dim, "metric": self.metric, "options": self.options()}

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} backend={self.backend!r} dim={self.dim} "
            f"metric={self.metric!r} n={len(self)}>"
        )


def _unpickle(
    cls: type[VectorIndex], payload: bytes, header: dict[str, Any]
) -> VectorIndex:
    return cls._from_bytes(payload, header)


def create_index(
    name: str, *, dim: int, metric: str = "cos", **options: Any
) -> VectorIndex:
    """A new, empty index of the backend registered as ``name``.

    Raises:
        UnknownPluginError: no backend of that name (the message lists them).
    """
    cls = plugins.get("vector-index", name)
    index: VectorIndex = cls(dim, check_metric(metric), **options)
    return index
