"""Backends on real engines: the packaged MiniLM, transformers and vLLM on the tiny
model, and the openai backend against a real vLLM server.

Random weights give meaningless text: generation tests check counts, timing fields
and determinism. MiniLM is a trained model, so similarity order is checked.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from sage_core.backends import (
    GenerationRequest,
    create_embedding_backend,
    create_generation_backend,
)

pytestmark = pytest.mark.inference


@pytest.fixture(scope="module")
def minilm(needs_inference):
    needs_inference("sentence_transformers", "sentence-transformers")
    backend = create_embedding_backend("sentence-transformers", max_wait_ms=20)
    try:
        yield backend
    finally:
        backend.close()


def test_minilm_gives_semantic_unit_vectors(minilm) -> None:
    assert minilm.dim == 384 and minilm.model == "all-MiniLM-L6-v2"
    q, para, other = minilm.embed(
        [
            "How do I stop a pipeline from using too much memory?",
            "Bounded queues and backpressure keep a dataflow's memory in check.",
            "The cat slept on the warm windowsill all afternoon.",
        ]
    )
    np.testing.assert_allclose(np.linalg.norm([q, para, other], axis=1), 1, rtol=1e-5)
    assert q @ para > q @ other + 0.2


def test_minilm_batches_concurrent_callers_and_shares_the_model(minilm) -> None:
    texts = [f"sentence number {i} about queues" for i in range(64)]
    alone = minilm.embed(texts[:8])
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        results[i] = minilm.embed(texts[8 * i : 8 * i + 8])

    before = len(minilm.batch_sizes)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    passes = minilm.batch_sizes[before:]
    assert sum(passes) == 64 and max(passes) > 8  # callers were combined
    assert max(passes) <= 64
    np.testing.assert_allclose(results[0], alone, atol=1e-5)
    twin = create_embedding_backend("sentence-transformers", max_wait_ms=20)
    try:
        assert twin._batcher is minilm._batcher  # one model in memory
    finally:
        twin.close()
    assert minilm.embed(["still open"]).shape == (1, 384)


@pytest.mark.slow
def test_transformers_backend_counts_timing_and_determinism(tiny_model: Path) -> None:
    llm = create_generation_backend("transformers", model=str(tiny_model))
    try:
        exact = {"ignore_eos": True}
        batch = [
            GenerationRequest(prompt=f"import module{i}", max_tokens=7, extra=exact)
            for i in range(3)
        ]
        first, again = llm.generate(batch), llm.generate(batch)
        assert [g.completion_tokens for g in first] == [7, 7, 7]
        assert [g.text for g in first] == [g.text for g in again]
        assert all(g.finish_reason == "length" for g in first)
        chat = GenerationRequest(
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            stream=True,
            extra=exact,
        )
        [streamed] = llm.generate([chat])
        assert streamed.completion_tokens == 5 and len(streamed.token_times_s) == 5
        assert streamed.ttft_s is not None and streamed.tbt_s is not None
    finally:
        llm.close()


@pytest.mark.slow
# vLLM's async client leaves its zmq context to the garbage collector at shutdown
@pytest.mark.filterwarnings("ignore:Unclosed context:ResourceWarning")
def test_in_process_vllm_matches_the_vllm_server(
    tiny_model: Path, vllm_server, needs_inference
) -> None:
    needs_inference("vllm", "vLLM")
    requests = [
        GenerationRequest(
            prompt=f"def f{i}(x):", max_tokens=9, extra={"ignore_eos": True}
        )
        for i in range(4)
    ]
    requests.append(
        GenerationRequest(
            prompt="class Queue:", max_tokens=6, stream=True, extra={"ignore_eos": True}
        )
    )
    local = create_generation_backend(
        "vllm", model=str(tiny_model), gpu=0, dtype="float32", max_model_len=512
    )
    try:
        assert local.gpu == 0
        inproc = local.generate(requests)
    finally:
        local.close()
    with create_generation_backend(
        "openai", base_url=vllm_server.api_url, model="tiny"
    ) as remote:
        served = remote.generate(requests)
    assert [g.completion_tokens for g in inproc] == [9, 9, 9, 9, 6]
    assert [g.text for g in inproc] == [g.text for g in served]  # greedy, same model
    assert inproc[-1].ttft_s is not None and len(inproc[-1].token_times_s) == 6
    assert served[-1].ttft_s is not None


def test_minilm_gives_unit_token_vectors_without_special_tokens(minilm) -> None:
    [tv, empty] = minilm.embed_tokens(["Could you recap the memo?", ""])
    assert tv.tokens == ("could", "you", "rec", "##ap", "the", "memo", "?")
    assert tv.vectors.shape == (7, 384) and tv.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(tv.vectors, axis=1), 1, rtol=1e-5)
    assert empty.tokens == () and empty.vectors.shape == (0, 384)


def test_views_tell_tools_apart_by_a_verb_synonym(minilm) -> None:
    from sage_plugins.agents import ToolIndex

    verbs = {"restore": "Restore a deleted", "summarize": "Summarize the content of"}
    objects = {"invoice": "invoice", "note": "personal note", "flight": "flight"}
    names = [f"{v}_{o}" for v in verbs for o in objects]
    descs = [f"{verbs[v]} a {objects[o]}." for v in verbs for o in objects]
    idx = ToolIndex(names, descs, minilm)
    assert "tokens" in idx.signals
    assert idx.top("Could you give me the gist of my memo?", 1, "views") == [
        "summarize_note"
    ]
    assert idx.top("please bring back the bill", 1, "views") == ["restore_invoice"]


def test_minilm_token_vectors_of_a_long_text_stop_where_the_model_does(minilm) -> None:
    [tv] = minilm.embed_tokens(["word " * 1000])
    assert 0 < len(tv.tokens) == len(tv.vectors) <= 256
    with pytest.raises(Exception, match="not strings"):
        minilm.embed_tokens(["fine", 3])  # type: ignore[list-item]
