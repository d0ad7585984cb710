"""Built-in inference backends, registered by name for ``create_backend(name, ...)``.

* ``openai``: any OpenAI-compatible server (vLLM, llama.cpp, hosted APIs, SAGE's
  gateway) over HTTP; embeddings and generation, streaming with TTFT/TBT;
* ``vllm``: an in-process vLLM engine (imported lazily; GPU by default);
* ``transformers``: in-process generation with Hugging Face transformers;
* ``sentence-transformers``: local sentence embeddings, by default the packaged
  all-MiniLM-L6-v2, with micro-batching across callers;
* ``hash``: a deterministic feature-hashing embedder (lexical, not semantic);
* ``extractive``: answers made of the context sentences closest to the question (by
  embedding similarity), with their ``[n]`` sources; no generative model.

Heavy libraries (torch, vLLM, sentence-transformers) load only when a backend of
theirs is built, so registering costs nothing.
"""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from sage_plugins.backends.extractive import ExtractiveBackend
from sage_plugins.backends.hashing import HashEmbedding
from sage_plugins.backends.hf_transformers import TransformersBackend
from sage_plugins.backends.openai_http import OpenAIBackend
from sage_plugins.backends.sentence_tf import SentenceTransformersBackend
from sage_plugins.backends.vllm_engine import VLLMBackend

__all__ = [
    "ExtractiveBackend",
    "HashEmbedding",
    "OpenAIBackend",
    "SentenceTransformersBackend",
    "TransformersBackend",
    "VLLMBackend",
]


@hookimpl
def register_backends(register: Any) -> None:
    """The built-in backends, by the names pipelines use (``backend="..."``)."""
    register(
        "openai",
        OpenAIBackend,
        capabilities=OpenAIBackend.capabilities,
        description="any OpenAI-compatible server over HTTP",
    )
    register(
        "vllm",
        VLLMBackend,
        capabilities=VLLMBackend.capabilities,
        description="in-process vLLM engine (GPU by default)",
    )
    register(
        "transformers",
        TransformersBackend,
        capabilities=TransformersBackend.capabilities,
        description="in-process Hugging Face transformers generation",
    )
    register(
        "sentence-transformers",
        SentenceTransformersBackend,
        capabilities=SentenceTransformersBackend.capabilities,
        description="local sentence embeddings (packaged all-MiniLM-L6-v2)",
    )
    register(
        "hash",
        HashEmbedding,
        capabilities=HashEmbedding.capabilities,
        description="deterministic feature-hashing embedder (lexical, offline)",
    )
    register(
        "extractive",
        ExtractiveBackend,
        capabilities=ExtractiveBackend.capabilities,
        description="context sentences closest to the question (no model)",
    )
