"""Data sets of the vector-index benchmark: clustered blobs and real MiniLM text.

* ``clustered``: Gaussian blobs around random centres, rows normalised (ip == cos);
  the queries are held-out points of the same blobs, so they come from the data's own
  distribution.
* ``text``: all-MiniLM-L6-v2 embeddings of the demo corpus (SAGE's own documentation)
  as the base, its questions as queries. Embeddings are cached under SAGE's cache
  directory (keyed by the texts), so only the first run needs the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class DataSet:
    """Base vectors and queries of one benchmark case."""

    name: str
    base: Matrix
    queries: Matrix
    note: str


def clustered(n: int, queries: int, dim: int, seed: int, clusters: int) -> DataSet:
    """`n` base rows and `queries` held-out rows drawn from the same blobs."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n + queries)]
    x += rng.standard_normal(x.shape).astype(np.float32) * 0.6
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(x))
    return DataSet(
        name=f"clustered-{dim}",
        base=np.ascontiguousarray(x[order[:n]]),
        queries=np.ascontiguousarray(x[order[n:]]),
        note=f"{n:,} x {dim}, {clusters} blobs, {queries} held-out queries",
    )


def _embed_cached(texts: list[str], cache: Path) -> Matrix:
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = cache / f"minilm-{key}.npy"
    if path.is_file():
        return np.load(path)
    from sage_plugins.backends.sentence_tf import SentenceTransformersBackend

    backend = SentenceTransformersBackend()
    try:
        vectors = np.ascontiguousarray(backend.embed(texts), dtype=np.float32)
    finally:
        backend.close()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


def text(limit: int | None = None) -> DataSet:
    """MiniLM embeddings of the demo corpus (base) and its questions (queries).

    Args:
        limit: embed only the first `limit` passages (smoke runs).
    """
    from sage_core.common.settings import cache_dir
    from sage_plugins.demo.corpus import corpus_path, questions_path

    passages = [json.loads(line)["text"] for line in corpus_path().open()]
    passages = passages[:limit] if limit else passages
    asked = [json.loads(line)["query"] for line in questions_path().open()]
    cache = cache_dir() / "bench"
    base = _embed_cached(passages, cache)
    queries = _embed_cached(asked, cache)
    return DataSet(
        name=f"text-{base.shape[1]}",
        base=base,
        queries=queries,
        note=f"{len(base)} demo-corpus passages, {len(queries)} demo questions "
        "(all-MiniLM-L6-v2)",
    )
