"""The RAG operators as a pipeline on the local runtime: index the packaged corpus,
answer questions through an OpenAI-compatible server (the EngineDouble here; real
engines in tests/inference/), dead-letter bad items, and GPU-honest contracts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_core.api import LocalEnvironment
from sage_core.common.errors import SageError
from sage_plugins.demo.corpus import corpus_path, questions_path

EMBED = {"backend": "hash", "backend_config": {"dim": 256}}


def index_corpus(root: Path, path: Path, parallelism: int = 2) -> object:
    env = LocalEnvironment("index")
    (
        env.from_source("jsonl-documents", path=str(path))
        .flat_map("chunk", max_tokens=120)
        .map("embed", **EMBED)
        .sink(
            "index-writer", collection="docs", root=str(root), parallelism=parallelism
        )
    )
    return env.execute(timeout=120)


def test_index_then_answer_through_an_openai_server(
    tmp_path: Path, engine_double
) -> None:
    indexed = index_corpus(tmp_path, corpus_path())
    chunks = indexed.metrics["operators"]["chunk"]["items_out"]
    assert sum(indexed.results["index-writer"]) == chunks >= 400
    engine = engine_double("tiny", token_delay_s=0.0005)
    questions = [json.loads(x) for x in questions_path().read_text().splitlines()]
    env = LocalEnvironment("ask")
    (
        env.from_collection(questions)
        .map("embed", field="query", **EMBED)
        .map("retrieve", collection="docs", root=str(tmp_path), top_k=4)
        .map("rerank", method="bm25")
        .map("refine", budget_tokens=120)
        .map("prompt", max_prompt_tokens=300)
        .map(
            "generate",
            backend_config={"base_url": engine.url + "/v1", "model": "tiny"},
            max_tokens=6,
            stream=True,
        )
        .collect()
    )
    result = env.execute(timeout=120)
    answers = result.collected()
    assert sorted(a["query"] for a in answers) == sorted(q["query"] for q in questions)
    for a in answers:
        assert len(a["contexts"]) == 4 and a["context"]
        assert a["refine"]["tokens_out"] <= 120
        assert a["generation"]["completion_tokens"] == 6
        assert a["generation"]["ttft_s"] is not None
    ops = result.metrics["operators"]
    assert ops["generate"]["items_out"] == len(questions)
    assert set(ops) >= {"embed", "retrieve", "rerank", "refine", "prompt"}


def test_bad_query_items_go_to_the_dead_letters(tmp_path: Path) -> None:
    index_corpus(tmp_path, corpus_path(), parallelism=1)
    env = LocalEnvironment("ask")
    items = [{"query": "What is a contract?"}, {"question": "wrong field"}, "Plugins?"]
    (
        env.from_collection(items)
        .map("embed", field="query", on_error="dead-letter", batch_size=1, **EMBED)
        .map("retrieve", collection="docs", root=str(tmp_path), top_k=2)
        .collect()
    )
    result = env.execute(timeout=60)
    assert sorted(a["query"] for a in result.collected()) == [
        "Plugins?",
        "What is a contract?",
    ]
    [dead] = result.dead_letters
    assert dead["item"] == {"question": "wrong field"}
    assert "no 'query' field" in json.dumps(dead)


def test_malformed_corpus_fails_the_index_job_with_the_line(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": 42}\n')
    with pytest.raises(SageError, match=r"c.jsonl:2"):
        index_corpus(tmp_path, corpus)


def test_generation_on_vllm_declares_a_gpu_the_embedded_default_lacks() -> None:
    env = LocalEnvironment("gpu", resources={})
    (
        env.from_collection([{"prompt": "x"}])
        .map("generate", backend="vllm", backend_config={"model": "/m"})
        .collect()
    )
    with pytest.raises(SageError, match="GPU"):
        env.compile()
    cpu = LocalEnvironment("cpu", resources={})
    (
        cpu.from_collection([{"prompt": "x"}])
        .map("generate", backend="vllm", backend_config={"model": "/m", "gpu": 0})
        .collect()
    )
    plan = cpu.compile()
    [generate] = [op for op in plan.operators if op.name == "generate"]
    assert generate.contract.gpu == 0


def test_wrong_embedder_dimension_is_a_short_named_error(tmp_path: Path) -> None:
    env = LocalEnvironment("index-64")
    (
        env.from_collection([{"id": "a", "text": "queues and backpressure"}])
        .map("embed", backend="hash", backend_config={"dim": 64})
        .sink("index-writer", collection="dims", root=str(tmp_path))
    )
    env.execute(timeout=60)
    env = LocalEnvironment("ask-384")
    (
        env.from_collection([{"query": "what is backpressure?"}])
        .map("embed", field="query", backend="hash", backend_config={"dim": 384})
        .map("retrieve", collection="dims", root=str(tmp_path))
        .collect()
    )
    with pytest.raises(SageError) as info:
        env.execute(timeout=60)
    message = str(info.value)
    assert "EmbeddingDimensionError" in message
    assert "holds 64-d vectors" in message and "the queries are 384-d" in message
    assert "ndarray(shape=(384,), dtype=float32)" in message  # not its 384 values
    assert "0.," not in message and len(message) < 800
