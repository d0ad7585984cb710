"""Vector indexes behind retrieval: one interface, several backends chosen by name.

``create_index("native-flat" | "native-ivf" | "hnswlib" | "usearch" | <plugin>, dim=...,
metric=...)`` resolves the name through the ``vector-index`` plugin registry;
``load_index(path)`` reopens a saved index of any registered backend.

Conventions shared by every backend, so a retrieve operator can switch backends
without changing meaning:

* ids are ``uint64``; ``MISSING_ID`` (2**64-1) is reserved and pads missing results;
* ``search`` returns ``(ids, scores)`` of shape ``(len(queries), k)``, best first,
  where **higher scores are more similar**: ``ip`` the dot product, ``cos`` the cosine,
  ``l2`` *minus* the squared Euclidean distance; padding has score ``-inf``;
* ``add`` rejects ids that are already present or repeated in the batch
  (``DuplicateIdError``, nothing added): remove an id first to replace its vector;
* ``remove`` raises ``UnknownIdError`` (removing nothing) if an id is absent;
* ``allowed_ids`` restricts results to those ids during the search (not by dropping
  results afterwards), so up to ``k`` allowed results come back;
* ``save(path)`` writes one file (header naming the backend + checksummed payload);
  a corrupt, truncated or foreign file raises ``IndexFormatError``;
* ``load_index(path)`` treats the file as untrusted input: it checks every field and
  raises ``IndexFormatError`` on a forged one; backends whose library loader cannot
  be made safe that way (``usearch``) open files only with ``trusted=True``.

``sage_core.common.extension.load_extension`` is the only importer of ``_native``;
this package and ``sage_core.channels`` reach it through that loader.
"""

from __future__ import annotations

from sage_core.vector_index.base import (
    FILE_MAGIC,
    METRICS,
    MISSING_ID,
    DimensionMismatchError,
    DuplicateIdError,
    IndexFormatError,
    IndexNotTrainedError,
    UnknownIdError,
    UnsupportedByBackendError,
    UntrustedIndexError,
    VectorIndex,
    VectorIndexError,
    as_ids,
    as_matrix,
    check_metric,
    create_index,
)
from sage_core.vector_index.files import load_index, read_index_header
from sage_core.vector_index.native import FlatIndex, IVFIndex

__all__ = [
    "FILE_MAGIC",
    "METRICS",
    "MISSING_ID",
    "DimensionMismatchError",
    "DuplicateIdError",
    "FlatIndex",
    "IVFIndex",
    "IndexFormatError",
    "IndexNotTrainedError",
    "UnknownIdError",
    "UnsupportedByBackendError",
    "UntrustedIndexError",
    "VectorIndex",
    "VectorIndexError",
    "as_ids",
    "as_matrix",
    "check_metric",
    "create_index",
    "load_index",
    "read_index_header",
]
