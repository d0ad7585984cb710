"""The demo corpus shipped with SAGE: its own documentation, as passages.

``sage_docs.jsonl`` holds a few hundred passages (``id``, ``text``, ``source``,
``section``) cut from SAGE's Markdown pages and docstrings by
``tools/make_demo_corpus.py``; ``questions.jsonl`` holds sample questions about SAGE.
``sage demo`` indexes the first and answers the second; the RAG tests use both.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _data(name: str) -> Path:
    path = Path(str(resources.files("sage_plugins.demo") / "data" / name))
    if not path.is_file():
        raise FileNotFoundError(f"the packaged file {name} is missing at {path}")
    return path


def corpus_path() -> Path:
    """Path of the demo corpus (JSON lines: id, text, source, section)."""
    return _data("sage_docs.jsonl")


def questions_path() -> Path:
    """Path of the demo questions (JSON lines: query)."""
    return _data("questions.jsonl")
