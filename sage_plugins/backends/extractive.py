"""The ``extractive`` backend: answers made of the context's own sentences, no model.

It reads the numbered context passages and the question from the prompt that the
``prompt`` operator builds (``[n] text`` lines, then a ``Question:`` line), splits the
passages into sentences, and answers with the ``max_sentences`` sentences most similar
to the question by embedding similarity (cosine, with any embedding backend; by default
the packaged all-MiniLM-L6-v2), best first, each followed by ``[n]``: the rank of the
passage it comes from, the citation form the default prompt asks a model for. When
``max_tokens`` cannot hold the best sentence whole, its beginning is given, followed by
``…``, and the finish reason is ``"length"``.

Nothing is generated: every word of an answer is a word of the context. It is an
honest offline answerer for machines without a trained generative model, and a
baseline next to one. The model name it reports starts with ``extractive``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sage_core.backends import (
    BackendError,
    EmbeddingBackend,
    Generation,
    GenerationBackend,
    GenerationRequest,
    create_embedding_backend,
)
from sage_plugins.rag.text import approx_tokens, split_sentences

_TAG = re.compile(r"^\[(\d+)\][ \t]*", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Sentence:
    """One candidate sentence of the context and the passage rank it comes from."""

    text: str
    source: int


def prompt_text(request: GenerationRequest) -> str:
    """The text holding question and context: the raw prompt, or the content of the
    last user message of a chat request."""
    if request.messages is None:
        assert request.prompt is not None
        return request.prompt
    users = [m for m in request.messages if m.get("role") == "user"]
    content = (users or list(request.messages))[-1].get("content", "")
    if not isinstance(content, str):
        raise BackendError(
            "extractive: the user message must be a string, got "
            f"{type(content).__name__}"
        )
    return content


def parse_prompt(
    text: str, *, question_marker: str = "Question:", answer_marker: str = "Answer:"
) -> tuple[str, list[Sentence]]:
    """(question, context sentences) of a prompt built by the ``prompt`` operator.

    The question is the text after the last ``question_marker`` (up to
    ``answer_marker``); the context is every ``[n] ...`` passage before it, split
    into sentences. Text before the first ``[n]`` (instructions) is not context.

    Raises:
        BackendError: the prompt has no ``question_marker``.
    """
    at = text.rfind(question_marker)
    if at < 0:
        raise BackendError(
            f"extractive: the prompt has no {question_marker!r} line; build prompts "
            "with the prompt operator's default template, or set question_marker= "
            "to the marker your template uses"
        )
    question = text[at + len(question_marker) :]
    end = question.find(answer_marker)
    question = (question[:end] if end >= 0 else question).strip()
    context = text[:at]
    tags = list(_TAG.finditer(context))
    sentences: list[Sentence] = []
    for tag, after in zip(tags, [*tags[1:], None], strict=True):
        passage = context[tag.end() : after.start() if after else len(context)]
        sentences += [Sentence(s, int(tag.group(1))) for s in split_sentences(passage)]
    return question, sentences


def _cut(text: str, budget: int) -> str:
    """The longest word prefix of ``text`` within ``budget`` approximate tokens."""
    kept: list[str] = []
    for word in text.split():
        if approx_tokens(" ".join([*kept, word])) > budget:
            break
        kept.append(word)
    return " ".join(kept)


class ExtractiveBackend(GenerationBackend):
    """Answers with the context sentences closest to the question (see the module
    docstring).

    Args:
        embedder: the embedding backend scoring sentences against the question.
        embedder_config: its configuration.
        max_sentences: most sentences in an answer.
        question_marker: the line prefix introducing the question in the prompt.
        answer_marker: what ends the question (the template's answer cue).
    """

    capabilities: ClassVar[tuple[str, ...]] = ("generate", "chat")

    def __init__(
        self,
        *,
        embedder: str = "sentence-transformers",
        embedder_config: Mapping[str, Any] | None = None,
        max_sentences: int = 3,
        question_marker: str = "Question:",
        answer_marker: str = "Answer:",
    ) -> None:
        if isinstance(max_sentences, bool) or not isinstance(max_sentences, int):
            raise BackendError(
                f"extractive: max_sentences must be an int, got {max_sentences!r}"
            )
        if max_sentences < 1:
            raise BackendError(
                f"extractive: max_sentences must be >= 1, got {max_sentences}"
            )
        if not question_marker:
            raise BackendError("extractive: question_marker must not be empty")
        self.embedder: EmbeddingBackend = create_embedding_backend(
            embedder, **dict(embedder_config or {})
        )
        self.max_sentences = max_sentences
        self.markers = (question_marker, answer_marker)
        self.model = f"extractive ({self.embedder.model})"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        started = time.perf_counter()
        parsed = []
        texts: list[str] = []
        for request in requests:
            prompt = prompt_text(request)
            question, sentences = parse_prompt(
                prompt, question_marker=self.markers[0], answer_marker=self.markers[1]
            )
            parsed.append((request, prompt, sentences, len(texts)))
            texts += [question, *(s.text for s in sentences)]
        vectors = self.embedder.embed(texts) if texts else None
        latency = time.perf_counter() - started
        out = []
        for request, prompt, sentences, row in parsed:
            scores = (
                vectors[row + 1 : row + 1 + len(sentences)] @ vectors[row]
                if vectors is not None and sentences
                else np.zeros(0, dtype=np.float32)
            )
            text, finish = self._answer(sentences, scores, request.max_tokens)
            out.append(
                Generation(
                    text=text,
                    model=self.model,
                    finish_reason=finish,
                    prompt_tokens=approx_tokens(prompt),
                    completion_tokens=approx_tokens(text),
                    latency_s=latency,
                    # the whole answer is ready at once: one piece, at the end
                    ttft_s=latency if request.stream else None,
                    token_times_s=(latency,) if request.stream else (),
                    source="in-process",
                )
            )
        return out

    def _answer(
        self, sentences: list[Sentence], scores: Any, max_tokens: int
    ) -> tuple[str, str]:
        """The best sentences within ``max_tokens``, each with its ``[n]``; and the
        finish reason (``"length"`` when the budget left a chosen sentence out)."""
        pieces: list[str] = []
        seen: set[str] = set()
        used = 0
        for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
            sentence = sentences[int(i)]
            if sentence.text in seen:
                continue
            if len(pieces) == self.max_sentences:
                break
            piece = f"{sentence.text} [{sentence.source}]"
            need = approx_tokens(piece)
            if used + need > max_tokens:
                if (
                    not pieces
                ):  # the best sentence alone is too long: cut it, and say so
                    tag = f" … [{sentence.source}]"
                    cut = _cut(sentence.text, max_tokens - approx_tokens(tag))
                    pieces.append(cut + tag if cut else "")
                return " ".join(p for p in pieces if p), "length"
            pieces.append(piece)
            seen.add(sentence.text)
            used += need
        return " ".join(pieces), "stop"

    def close(self) -> None:
        self.embedder.close()
