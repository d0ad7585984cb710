"""embed, index-writer and retrieve called directly, on the hash embedder and the
real vector indexes; collections written under a temporary root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sage_core.contract import ContractError
from sage_core.functions import OperatorContext
from sage_plugins.rag.collection import Collection, CollectionError
from sage_plugins.rag.common import MissingFieldError, RagError
from sage_plugins.rag.retrieval import Embed, IndexWriter, Retrieve

TOPICS = {
    "queue": "bounded queue backpressure memory slow consumer",
    "gpu": "gpu placement resources worker actor contract",
    "index": "vector index nearest neighbour search hnsw flat",
    "token": "token stream latency first token generation",
}


def docs(n_per_topic: int = 6) -> list[dict]:
    out = []
    for topic, words in TOPICS.items():
        for i in range(n_per_topic):
            out.append(
                {
                    "id": f"{topic}-{i}",
                    "text": f"{words} note {i} {topic}",
                    "meta": {"topic": topic, "i": i},
                }
            )
    return out


def embed(items: list, **config) -> list:
    op = Embed(backend="hash", backend_config={"dim": 128}, **config)
    op.open(OperatorContext("embed"))
    try:
        return op.map_batch(items)
    finally:
        op.close()


def write(root: Path, items: list, *, job: str = "j1", replica: int = 0, **cfg) -> int:
    writer = IndexWriter(collection="c", root=str(root), **cfg)
    writer.open(OperatorContext("index-writer", replica_index=replica, job_id=job))
    writer.sink_batch(items)
    writer.close()
    return writer.result()


def retrieve(root: Path, queries: list, **cfg) -> list:
    op = Retrieve(collection="c", root=str(root), **cfg)
    op.open(OperatorContext("retrieve"))
    return op.map_batch(embed(queries, field="query"))


def test_embed_adds_unit_vectors_and_accepts_bare_strings() -> None:
    out = embed([{"text": "a b c", "id": 1}, "plain string"])
    assert out[0]["id"] == 1 and out[0]["embedding"].shape == (128,)
    assert out[1]["text"] == "plain string"
    np.testing.assert_allclose(np.linalg.norm(out[0]["embedding"]), 1, rtol=1e-5)
    with pytest.raises(MissingFieldError, match="no 'text' field"):
        embed([{"body": "x"}])


def test_embed_contract_follows_its_backend_config() -> None:
    assert Embed.contract_for({}).gpu == 0
    assert Embed.contract_for({"backend_config": {"device": "cuda"}}).gpu == 1
    c = Embed.contract_for({"backend": "hash", "batch_size": 128, "max_wait_ms": 2})
    assert (c.batch_size, c.max_wait_ms, c.gpu) == (128, 2.0, 0)
    with pytest.raises(ContractError, match="embed: unknown backend 'nope'"):
        Embed.contract_for({"backend": "nope"})


@pytest.mark.parametrize("index", ["native-flat", "native-ivf", "hnswlib", "usearch"])
def test_write_then_retrieve_on_every_index(tmp_path: Path, index: str) -> None:
    items = embed(docs())
    assert write(tmp_path, items, index=index, embedding_model="hash-128") == 24
    query = [{"query": TOPICS["index"] + " note 3 index"}]
    [hit] = retrieve(tmp_path, query, top_k=3, trusted=index == "usearch")
    assert "embedding" not in hit
    ids = [c["id"] for c in hit["contexts"]]
    assert ids[0] == "index-3"
    assert all(i.startswith("index-") for i in ids)
    scores = [c["score"] for c in hit["contexts"]]
    assert scores == sorted(scores, reverse=True)
    assert hit["contexts"][0]["meta"] == {"topic": "index", "i": 3}


def test_retrieve_matches_brute_force_over_shards_of_two_replicas(
    tmp_path: Path,
) -> None:
    items = embed(docs())
    write(tmp_path, items[::2], replica=0)
    write(tmp_path, items[1::2], replica=1)
    store = Collection("c", str(tmp_path))
    assert len(store) == 24 and len(store.shards) == 2
    queries = embed([{"query": w} for w in TOPICS.values()], field="query")
    got = retrieve(tmp_path, [{"query": w} for w in TOPICS.values()], top_k=5)
    matrix = np.stack([i["embedding"] for i in items])
    for q, out in zip(queries, got, strict=True):
        scores = matrix @ q["embedding"]
        best = sorted(scores, reverse=True)[:5]  # (ties make ids ambiguous)
        got_scores = [c["score"] for c in out["contexts"]]
        np.testing.assert_allclose(got_scores, best, rtol=1e-5, atol=1e-6)
        by_id = {i["id"]: s for i, s in zip(items, scores, strict=True)}
        for c in out["contexts"]:
            assert by_id[c["id"]] == pytest.approx(c["score"], abs=1e-5)


def test_metadata_filters_from_config_and_from_the_item(tmp_path: Path) -> None:
    write(tmp_path, embed(docs()))
    q = {"query": TOPICS["queue"]}
    [only_gpu] = retrieve(tmp_path, [q], top_k=4, where={"topic": "gpu"})
    assert [c["meta"]["topic"] for c in only_gpu["contexts"]] == ["gpu"] * 4
    mixed = retrieve(
        tmp_path,
        [q, {**q, "where": {"topic": ["token", "index"], "i": 0}}],
        top_k=10,
        where={"topic": "gpu"},
    )
    assert len(mixed[0]["contexts"]) == 6
    assert {c["id"] for c in mixed[1]["contexts"]} == {"token-0", "index-0"}


def test_overwrite_replaces_a_generation_and_append_adds(tmp_path: Path) -> None:
    items = embed(docs())
    write(tmp_path, items[:10], job="first")
    write(tmp_path, items[10:14], job="second")
    assert len(Collection("c", str(tmp_path))) == 4
    write(tmp_path, items[14:], job="third", mode="append")
    assert len(Collection("c", str(tmp_path))) == 14
    other = embed(docs(1))
    other = [{**d, "embedding": np.ones(64, np.float32)} for d in other]
    with pytest.raises(CollectionError, match="has dim 128"):
        write(tmp_path, other, job="fourth", mode="append")
    assert len(Collection("c", str(tmp_path))) == 14


def test_collection_errors_are_named(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="no collection 'c'"):
        Collection("c", str(tmp_path))
    with pytest.raises(CollectionError, match="invalid collection name"):
        Collection("../etc", str(tmp_path))
    assert write(tmp_path, []) == 0  # a replica without documents writes nothing
    with pytest.raises(CollectionError, match="no collection"):
        Collection("c", str(tmp_path))
    write(tmp_path, embed(docs(1)))
    op = Retrieve(collection="c", root=str(tmp_path))
    op.open(OperatorContext("retrieve"))
    with pytest.raises(CollectionError, match="holds 128-d vectors"):
        op.map_batch([{"query": "x", "embedding": np.ones(32, np.float32)}])
    with pytest.raises(MissingFieldError, match="no 'embedding' field"):
        op.map_batch([{"query": "x"}])
    with pytest.raises(MissingFieldError, match="no 'embedding'"):
        write(tmp_path, [{"id": "x", "text": "no vector"}])
    with pytest.raises(RagError, match="top_k"):
        Retrieve(collection="c", top_k=0)
