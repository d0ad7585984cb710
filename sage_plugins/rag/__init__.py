"""RAG operators: document sources, chunking, embedding, vector collections,
retrieval, reranking, context refinement, prompting and generation.

Each is a Function with an honest contract: embedding and generation stages declare
the GPUs their configured backend needs (``contract_for``) and batch by their
``batch_size``/``max_wait_ms``. Items are dicts (see ``common.py`` for the fields).
"""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from sage_plugins.rag.context import Refine, Rerank
from sage_plugins.rag.documents import Chunk, JsonlDocuments, TextDocuments
from sage_plugins.rag.generation import Generate, Prompt
from sage_plugins.rag.live import LiveIndexWriter, LiveRetrieve
from sage_plugins.rag.retrieval import Embed, IndexWriter, Retrieve

OPERATORS: dict[str, tuple[type, str]] = {
    "jsonl-documents": (JsonlDocuments, "source"),
    "text-documents": (TextDocuments, "source"),
    "chunk": (Chunk, "flat_map"),
    "embed": (Embed, "map"),
    "index-writer": (IndexWriter, "sink"),
    "retrieve": (Retrieve, "map"),
    "rerank": (Rerank, "map"),
    "refine": (Refine, "map"),
    "prompt": (Prompt, "map"),
    "generate": (Generate, "map"),
    "live-writer": (LiveIndexWriter, "sink"),
    "live-retrieve": (LiveRetrieve, "map"),
}

__all__ = [
    "OPERATORS",
    "Chunk",
    "Embed",
    "Generate",
    "IndexWriter",
    "JsonlDocuments",
    "LiveIndexWriter",
    "LiveRetrieve",
    "Prompt",
    "Refine",
    "Rerank",
    "Retrieve",
    "TextDocuments",
]


@hookimpl
def register_operators(register: Any) -> None:
    """The RAG operators, by the names pipelines use."""
    for name, (cls, role) in OPERATORS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        register(name, cls, role=role, description=doc)
