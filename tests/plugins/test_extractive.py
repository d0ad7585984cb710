"""The ``extractive`` backend: answers are sentences of the retrieved context, each
with the rank of the passage it came from (hash embedder: no torch needed)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core.api import LocalEnvironment
from sage_core.backends import BackendError, GenerationRequest, create_backend
from sage_plugins.rag.generation import Prompt
from sage_plugins.rag.text import approx_tokens

HASH = {"embedder": "hash", "embedder_config": {"dim": 512, "char_ngrams": 3}}
CONTEXTS = [
    {
        "id": "a",
        "text": "Replicas run operator code. A replica lives on one Dask worker.",
    },
    {
        "id": "b",
        "text": "Collections persist under the data directory. Each shard has a "
        "vector index file.",
    },
]
PIECE = re.compile(r"(.+?)(?: …)? \[(\d+)\](?: |$)")


def _pieces(answer: str) -> list[tuple[str, int]]:
    return [(text, int(n)) for text, n in PIECE.findall(answer)]


def _request(query: str, contexts: list[dict], *, chat: bool = True, **kw):
    item = Prompt(chat=chat, max_prompt_tokens=2000).map(
        {"query": query, "contexts": contexts}
    )
    if chat:
        return GenerationRequest(messages=item["messages"], **kw)
    return GenerationRequest(prompt=item["prompt"], **kw)


def test_answers_with_context_sentences_and_their_sources() -> None:
    with create_backend("extractive", max_sentences=1, **HASH) as llm:
        [answer] = llm.generate([_request("Where do collections persist?", CONTEXTS)])
    assert answer.text == "Collections persist under the data directory. [2]"
    assert answer.model.startswith("extractive") and answer.finish_reason == "stop"
    assert answer.completion_tokens == approx_tokens(answer.text)


def test_prompt_and_chat_requests_extract_the_same_answer() -> None:
    query = "Where does a replica live?"
    with create_backend("extractive", max_sentences=2, **HASH) as llm:
        chat, plain = llm.generate(
            [_request(query, CONTEXTS), _request(query, CONTEXTS, chat=False)]
        )
    assert chat.text == plain.text
    assert _pieces(chat.text)[0] == ("A replica lives on one Dask worker.", 1)


sentence = st.from_regex(r"[A-Z][a-z]{2,8}( [a-z]{2,8}){2,6}\.", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(
    passages=st.lists(
        st.lists(sentence, min_size=1, max_size=4), min_size=1, max_size=5
    ),
    query=sentence,
    max_sentences=st.integers(1, 4),
    max_tokens=st.integers(8, 200),
)
def test_every_answer_piece_is_a_sentence_of_the_passage_it_cites(
    passages: list[list[str]], query: str, max_sentences: int, max_tokens: int
) -> None:
    contexts = [{"id": str(n), "text": " ".join(p)} for n, p in enumerate(passages)]
    llm = create_backend("extractive", max_sentences=max_sentences, **HASH)
    [answer] = llm.generate([_request(query, contexts, max_tokens=max_tokens)])
    pieces = _pieces(answer.text)
    assert len(pieces) <= max_sentences
    for text, source in pieces:
        passage = passages[source - 1]
        # whole sentences, or (only when the budget cut the best one) its beginning
        assert text in passage or (
            answer.finish_reason == "length"
            and len(pieces) == 1
            and any(s.startswith(text) for s in passage)
        )
    if answer.finish_reason == "stop":
        assert approx_tokens(answer.text) <= max_tokens


def test_a_prompt_without_a_question_line_is_named() -> None:
    llm = create_backend("extractive", **HASH)
    with pytest.raises(BackendError, match="no 'Question:' line"):
        llm.generate([GenerationRequest(prompt="[1] Some context.")])
    with pytest.raises(BackendError, match="max_sentences must be >= 1"):
        create_backend("extractive", max_sentences=0, **HASH)


def test_generate_stage_with_the_extractive_backend() -> None:
    env = LocalEnvironment("extractive")
    (
        env.from_collection([{"query": "Where do collections persist?"}])
        .map(lambda item: {**item, "contexts": CONTEXTS})
        .map("prompt")
        .map("generate", backend="extractive", backend_config=HASH, max_tokens=40)
        .collect()
    )
    [row] = env.execute().collected()
    assert "Collections persist under the data directory. [2]" in row["answer"]
    assert row["generation"]["model"].startswith("extractive")
