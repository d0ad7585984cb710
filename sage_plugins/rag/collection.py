"""Persisted vector collections: documents + a vector index, by name, on disk.

A collection lives in ``<data dir>/collections/<name>/`` (``sage info`` shows the data
dir; ``$SAGE_DATA_DIR``/XDG rules apply) or under an explicit ``root``::

    collection.json          manifest: dim, metric, index backend, embedding model,
                             generation, shards
    shard-<gen>-<replica>/   index.bin (a sage_core.vector_index file) + docs.jsonl

Every writer replica writes its own shard (so ``index-writer`` may run with any
parallelism) into a temporary directory, renames it into place, then adds it to the
manifest under a file lock. ``mode="overwrite"``: the first shard of a new generation
(one indexing job) replaces the previous generation's shards; ``"append"`` keeps them.
Readers search every shard and merge the top-k by score.

A collection directory may come from someone else, so ``collection.json`` is
untrusted input: shard directories must be named ``shard-<generation>-<replica>``
and lie directly inside the collection directory (nothing outside it is ever read or
deleted), counts must match the documents, and the index files are opened with
``load_index`` (``trusted=True`` is needed for backends whose loader trusts its
file, such as usearch).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sage_core.common.settings import data_dir
from sage_core.vector_index import MISSING_ID, VectorIndex, create_index, load_index
from sage_plugins.rag.common import RagError

MANIFEST = "collection.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHARD = re.compile(r"^shard-[A-Za-z0-9_-]{1,200}-[0-9]{1,9}$")


class CollectionError(RagError):
    """A collection is missing, empty, or does not match what is written to it."""


class EmbeddingDimensionError(CollectionError, ValueError):
    """Query vectors whose width is not the collection's (another embedder)."""


def collections_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where collections live: ``root`` or ``<data dir>/collections``."""
    return Path(root).expanduser() if root else data_dir() / "collections"


def collection_path(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The directory of collection ``name`` (the name is checked)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise CollectionError(
            f"invalid collection name {name!r}: use letters, digits, '.', '_' or '-'"
        )
    return collections_root(root) / name


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    """The checked manifest of the collection in ``directory`` (None: none yet).

    Raises:
        CollectionError: unreadable JSON, or a field of the wrong type, or a shard
            directory that is not one of ours inside ``directory``.
    """
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise CollectionError(f"{path} is corrupt: {exc}") from None
    problem = _manifest_problem(manifest)
    if problem is None:
        for entry in manifest["shards"]:
            shard = directory / entry["dir"]
            if shard.resolve().parent != directory.resolve():
                problem = f"shard {entry['dir']!r} leads outside the collection"
    if problem is not None:
        raise CollectionError(
            f"{path} is damaged or hostile ({problem}); nothing was read or "
            f"deleted. Remove the collection directory and write it again."
        )
    return dict(manifest)


def _manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed manifest's types and names, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    dim, shards = manifest.get("dim"), manifest.get("shards")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        return f"dim {dim!r}"
    for key in ("metric", "index", "generation"):
        if not isinstance(manifest.get(key), str):
            return f"{key} {manifest.get(key)!r}"
    if not isinstance(shards, list):
        return "shards is not a list"
    seen: set[str] = set()
    for entry in shards:
        if not isinstance(entry, dict):
            return f"shard entry {entry!r}"
        name, count = entry.get("dir"), entry.get("count")
        if not isinstance(name, str) or not _SHARD.match(name) or name in seen:
            return f"shard directory {name!r} is not a shard-<generation>-<n> name"
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return f"shard {name!r} has count {count!r}"
        seen.add(name)
    return None


def _write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, directory / MANIFEST)


def write_shard(
    name: str,
    *,
    docs: Sequence[Mapping[str, Any]],
    vectors: Any,
    generation: str,
    replica: int,
    index: str = "native-flat",
    metric: str = "cos",
    index_options: Mapping[str, Any] | None = None,
    embedding_model: str | None = None,
    mode: str = "overwrite",
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write one shard of ``docs`` with their ``vectors`` and publish it.

    Raises:
        CollectionError: bad mode, vectors not matching docs, or (append) a
            dimension/metric/model different from the collection's.
    """
    if mode not in ("overwrite", "append"):
        raise CollectionError(f"mode must be 'overwrite' or 'append', got {mode!r}")
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) != len(docs):
        raise CollectionError(
            f"collection {name!r}: {len(docs)} documents but vectors of shape "
            f"{matrix.shape}"
        )
    directory = collection_path(name, root)
    directory.mkdir(parents=True, exist_ok=True)
    dim = int(matrix.shape[1])
    vector_index = create_index(index, dim=dim, metric=metric, **(index_options or {}))
    vector_index.add(np.arange(len(docs), dtype=np.uint64), matrix)
    shard = f"shard-{re.sub(r'[^A-Za-z0-9_-]', '_', generation)}-{replica}"
    if not _SHARD.match(shard):
        raise CollectionError(
            f"generation {generation!r} / replica {replica!r} make no shard name: "
            f"use 1-200 characters and a replica number from 0"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{shard}.", dir=directory))
    try:
        vector_index.save(staging / "index.bin")
        with open(staging / "docs.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)
        with _locked(directory):
            manifest = _read_manifest(directory)
            same_generation = (
                manifest is not None and manifest["generation"] == generation
            )
            if manifest is not None and (mode == "append" or same_generation):
                for key, value in (
                    ("dim", dim),
                    ("metric", metric),
                    ("embedding_model", embedding_model),
                ):
                    if manifest.get(key) != value:
                        raise CollectionError(
                            f"collection {name!r} has {key} {manifest.get(key)!r}, "
                            f"but {value!r} is being written; use mode='overwrite' "
                            f"or another collection"
                        )
            else:  # a new generation replaces the old shards
                old = manifest["shards"] if manifest else []
                manifest = {
                    "name": name,
                    "dim": dim,
                    "metric": metric,
                    "index": index,
                    "embedding_model": embedding_model,
                    "generation": generation,
                    "shards": [],
                }
                for entry in old:
                    shutil.rmtree(directory / entry["dir"], ignore_errors=True)
            target = directory / shard
            shutil.rmtree(target, ignore_errors=True)
            staging.chmod(0o755)
            staging.rename(target)
            manifest["generation"] = generation
            manifest["shards"] = [
                s for s in manifest["shards"] if s["dir"] != shard
            ] + [{"dir": shard, "count": len(docs)}]
            manifest["updated"] = time.time()
            _write_manifest(directory, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory / shard


@dataclass
class _Shard:
    index: VectorIndex
    docs: list[dict[str, Any]]


def _load_shard(directory: Path, count: int, trusted: bool) -> _Shard:
    """One shard's index and documents, checked against the manifest's count."""
    index = load_index(directory / "index.bin", trusted=trusted)
    docs = []
    for line in (directory / "docs.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise CollectionError(f"{directory}/docs.jsonl is corrupt: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict):
            raise CollectionError(f"{directory}/docs.jsonl holds a non-document line")
        docs.append(doc)
    if not len(index) == len(docs) == count:
        raise CollectionError(
            f"{directory} holds {len(index)} vectors and {len(docs)} documents, the "
            f"manifest says {count}; remove the collection and write it again"
        )
    return _Shard(index, docs)


def _matches(meta: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    for key, wanted in where.items():
        value = meta.get(key)
        if isinstance(wanted, (list, tuple, set)):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


class Collection:
    """A collection opened for search (all shards loaded).

    Args:
        name: the collection's name (letters, digits, ``.``, ``_``, ``-``).
        root: directory holding collections (default: the data dir's).
        trusted: open index files of backends whose loader trusts its file
            (usearch); only for collections you wrote or whose source you trust.

    Raises:
        CollectionError: no such collection, or a damaged or hostile one.
        IndexFormatError: a shard's index file is damaged or forged.
        UntrustedIndexError: a shard's backend needs ``trusted=True``.
    """

    def __init__(
        self,
        name: str,
        root: str | os.PathLike[str] | None = None,
        *,
        trusted: bool = False,
    ) -> None:
        self.name = name
        self.path = collection_path(name, root)
        with _locked(self.path):
            manifest = _read_manifest(self.path)
            if manifest is None:
                raise CollectionError(
                    f"no collection {name!r} in {self.path.parent}; write one with "
                    f"the index-writer operator first"
                )
            self.manifest = manifest
            self.shards = [
                _load_shard(self.path / s["dir"], s["count"], trusted)
                for s in manifest["shards"]
            ]
        if len(self) == 0:
            raise CollectionError(f"collection {name!r} holds no documents")

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def embedding_model(self) -> str | None:
        return self.manifest.get("embedding_model")

    def __len__(self) -> int:
        return sum(len(s.docs) for s in self.shards)

    def search(
        self, queries: Any, k: int, where: Mapping[str, Any] | None = None
    ) -> list[list[dict[str, Any]]]:
        """Top-``k`` documents per query (``{id, text, meta, score}``, best first);
        ``where`` keeps documents whose meta equals (or, for a list, is among) the
        given values — applied inside the index search, so up to k come back."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            model = self.embedding_model or "not recorded"
            raise EmbeddingDimensionError(
                f"collection {self.name!r} holds {self.dim}-d vectors (embedding "
                f"model: {model}); the queries are {q.shape[-1]}-d: embed them with "
                f"the model that built the collection"
            )
        merged: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in range(len(q))]
        for shard in self.shards:
            allowed = None
            if where:
                allowed = np.array(
                    [i for i, d in enumerate(shard.docs) if _matches(d["meta"], where)],
                    dtype=np.uint64,
                )
                if len(allowed) == 0:
                    continue
            ids, scores = shard.index.search(
                q, min(k, len(shard.docs)), allowed_ids=allowed
            )
            if ((ids != MISSING_ID) & (ids >= len(shard.docs))).any():
                raise CollectionError(
                    f"collection {self.name!r}: an index returned an id without a "
                    f"document; remove the collection and write it again"
                )
            for row in range(len(q)):
                for i, score in zip(ids[row], scores[row], strict=True):
                    if i != MISSING_ID:
                        merged[row].append((float(score), shard.docs[int(i)]))
        out = []
        for hits in merged:
            hits.sort(key=lambda hit: -hit[0])
            out.append([{**doc, "score": score} for score, doc in hits[:k]])
        return out
