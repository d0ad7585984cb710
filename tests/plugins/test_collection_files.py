"""A collection directory is untrusted input: a hostile ``collection.json`` can make
SAGE neither delete nor read anything outside the collection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core.vector_index import UntrustedIndexError, create_index
from sage_plugins.rag.collection import (
    Collection,
    CollectionError,
    collection_path,
    write_shard,
)

DOCS = [{"id": f"d{i}", "text": f"doc {i}", "meta": {"i": i}} for i in range(4)]
VECTORS = np.eye(4, dtype=np.float32)


def written(root: Path, name: str = "c", **kw: object) -> Path:
    write_shard(
        name, docs=DOCS, vectors=VECTORS, generation="g1", replica=0, root=root, **kw
    )
    return root / name


def victim(tmp_path: Path) -> Path:
    """A directory outside the collections root, shaped like a shard."""
    outside = tmp_path / "outside" / "victim"
    written(tmp_path / "outside", "v")
    (tmp_path / "outside" / "v" / "shard-g1-0").rename(outside)
    (outside / "keep.txt").write_text("precious")
    return outside


def manifest_with(collection: Path, shard_dir: str) -> None:
    path = collection / "collection.json"
    manifest = json.loads(path.read_text())
    manifest["shards"] = [{"dir": shard_dir, "count": 4}]
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("how", ["absolute", "dotdot", "nested", "symlink"])
def test_a_hostile_shard_dir_deletes_and_reads_nothing_outside(
    tmp_path: Path, how: str
) -> None:
    outside = victim(tmp_path)
    root = tmp_path / "collections"
    collection = written(root)
    shard_dir = {
        "absolute": str(outside),
        "dotdot": "../../outside/victim",
        "nested": "shard-g1-0/../../../outside/victim",
        "symlink": "shard-evil-0",
    }[how]
    if how == "symlink":
        (collection / "shard-evil-0").symlink_to(outside)
    manifest_with(collection, shard_dir)
    refused = []
    try:  # a new generation: the old code rmtree'd every shard the manifest listed
        write_shard(
            "c", docs=DOCS, vectors=VECTORS, generation="g2", replica=0, root=root
        )
    except CollectionError as exc:
        refused.append(str(exc))
    assert (outside / "keep.txt").read_text() == "precious"
    assert refused and "damaged or hostile" in refused[0]
    with pytest.raises(CollectionError, match="damaged or hostile"):
        Collection("c", root)  # the old code read the victim's index and docs
    assert (outside / "index.bin").exists()


@pytest.mark.parametrize(
    "entry",
    [
        "not a list",
        [5],
        [{"dir": "shard-g1-0"}],
        [{"dir": "shard-g1-0", "count": -1}],
        [{"dir": "shard-g1-0", "count": True}],
        [{"dir": "shard-g1-0", "count": 4}, {"dir": "shard-g1-0", "count": 4}],
        [{"dir": "", "count": 4}],
        [{"dir": ".", "count": 4}],
        [{"dir": "docs", "count": 4}],
    ],
)
def test_malformed_shard_lists_are_named_errors(tmp_path: Path, entry: object) -> None:
    collection = written(tmp_path)
    manifest = json.loads((collection / "collection.json").read_text())
    manifest["shards"] = entry
    (collection / "collection.json").write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match="damaged or hostile"):
        Collection("c", tmp_path)


def test_counts_must_match_the_documents_and_the_index(tmp_path: Path) -> None:
    collection = written(tmp_path)
    manifest_with(collection, "shard-g1-0")  # count 4: matches
    assert len(Collection("c", tmp_path)) == 4
    docs = collection / "shard-g1-0" / "docs.jsonl"
    docs.write_text("\n".join(docs.read_text().splitlines()[:3]) + "\n")
    with pytest.raises(CollectionError, match="3 documents, the manifest says 4"):
        Collection("c", tmp_path)
    docs.write_text("[1, 2]\n" * 4)
    with pytest.raises(CollectionError, match="non-document line"):
        Collection("c", tmp_path)


def test_an_index_id_without_a_document_is_a_named_error(tmp_path: Path) -> None:
    collection = written(tmp_path)
    index = create_index("native-flat", dim=4)
    index.add([0, 1, 2, 99], VECTORS)  # ids 0..3 are the documents; 99 is not
    index.save(collection / "shard-g1-0" / "index.bin")
    store = Collection("c", tmp_path)  # the old code raised IndexError in search
    with pytest.raises(CollectionError, match="an id without a document"):
        store.search(VECTORS[3:], 4)


def test_usearch_collections_open_only_when_trusted(tmp_path: Path) -> None:
    written(tmp_path, index="usearch")
    with pytest.raises(UntrustedIndexError, match="trusted=True"):
        Collection("c", tmp_path)
    [hits] = Collection("c", tmp_path, trusted=True).search(VECTORS[2:3], 1)
    assert hits[0]["id"] == "d2"


def test_our_own_shard_names_always_pass_the_check(tmp_path: Path) -> None:
    written(tmp_path)
    write_shard(
        "c", docs=DOCS, vectors=VECTORS, generation="job/x:y", replica=3,
        root=tmp_path, mode="append",
    )  # fmt: skip
    assert len(Collection("c", tmp_path)) == 8
    with pytest.raises(CollectionError, match="make no shard name"):
        write_shard(
            "c", docs=DOCS, vectors=VECTORS, generation="g" * 300, replica=0,
            root=tmp_path,
        )  # fmt: skip


@given(st.text(max_size=140))
def test_collection_names_stay_inside_the_root(name: str) -> None:
    root = Path("/srv/collections")
    try:
        path = collection_path(name, root)
    except CollectionError as exc:
        assert "invalid collection name" in str(exc)
        return
    assert path.parent == root and path.name == name
    assert name not in (".", "..") and "/" not in name and not name.startswith(".")
