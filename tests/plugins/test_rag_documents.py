"""Document sources and the chunk splitter, called directly (open/run/flat_map)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core.functions import OperatorContext
from sage_plugins.demo.corpus import corpus_path, questions_path
from sage_plugins.rag.common import RagError
from sage_plugins.rag.documents import (
    Chunk,
    EmptyCorpusError,
    JsonlDocuments,
    MalformedDocumentError,
    TextDocuments,
)
from sage_plugins.rag.text import approx_tokens, split_sentences


def ctx(replica: int = 0, parallelism: int = 1) -> OperatorContext:
    return OperatorContext("docs", replica_index=replica, parallelism=parallelism)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_documents_ids_meta_and_replica_shares(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "docs.jsonl",
        [
            json.dumps({"id": "a", "text": "Alpha text.", "lang": "en", "n": 1}),
            "",
            json.dumps({"text": "No id here.", "lang": "de"}),
            json.dumps({"id": 7, "text": "Seven.", "lang": "en"}),
        ],
    )
    docs = list(JsonlDocuments(path=str(path)).run(ctx()))
    assert [d["id"] for d in docs] == ["a", "docs.jsonl:3", "7"]
    assert docs[0]["meta"] == {"lang": "en", "n": 1}
    only = JsonlDocuments(path=str(path), meta_fields=["lang"])
    assert next(iter(only.run(ctx())))["meta"] == {"lang": "en"}
    shares = [
        [d["id"] for d in JsonlDocuments(path=str(path)).run(ctx(r, 2))] for r in (0, 1)
    ]
    assert shares == [["a", "7"], ["docs.jsonl:3"]]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"id": "x", "body": "no text field"}), "'text'"),
        (json.dumps({"id": "x", "text": "   "}), "'text'"),
        (json.dumps(["a", "list"]), "'text'"),
    ],
)
def test_malformed_lines_fail_with_their_location(tmp_path, line, reason) -> None:
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"text": "good"}), line])
    with pytest.raises(MalformedDocumentError, match=rf"c.jsonl:2: .*{reason}"):
        list(JsonlDocuments(path=str(path)).run(ctx()))


def test_dead_letter_mode_keeps_good_documents_and_records_bad_ones(
    tmp_path: Path,
) -> None:
    path = write_lines(
        tmp_path / "c.jsonl",
        ["{broken", json.dumps({"text": "good one"}), json.dumps({"x": 1})],
    )
    dead = tmp_path / "bad" / "dead.jsonl"
    source = JsonlDocuments(
        path=str(path), on_bad_record="dead-letter", dead_letter=str(dead)
    )
    assert [d["text"] for d in source.run(ctx())] == ["good one"]
    records = [json.loads(x) for x in dead.read_text().splitlines()]
    assert [r["where"] for r in records] == [f"{path}:1", f"{path}:3"]
    assert records[0]["record"].startswith("{broken")
    with pytest.raises(RagError, match="needs dead_letter=PATH"):
        JsonlDocuments(path=str(path), on_bad_record="dead-letter")


def test_empty_corpus_is_a_named_error(tmp_path: Path) -> None:
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(EmptyCorpusError, match="no usable document"):
        list(JsonlDocuments(path=str(empty)).run(ctx()))
    bad = write_lines(tmp_path / "bad.jsonl", ["{", "["])
    source = JsonlDocuments(
        path=str(bad), on_bad_record="dead-letter", dead_letter=str(tmp_path / "d")
    )
    with pytest.raises(EmptyCorpusError, match="2 bad records"):
        list(source.run(ctx()))
    with pytest.raises(RagError, match="cannot open"):
        list(JsonlDocuments(path=str(tmp_path / "missing.jsonl")).run(ctx()))


def test_text_documents_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text("# Queues\n\nBounded queues give backpressure.\n")
    (tmp_path / "sub" / "b.txt").write_text("Plain text file.\n")
    (tmp_path / "skip.py").write_text("print('not a document')\n")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(MalformedDocumentError, match=r"bin\.txt: unreadable"):
        list(TextDocuments(path=str(tmp_path)).run(ctx()))
    dead = tmp_path / "dead.jsonl"
    source = TextDocuments(
        path=str(tmp_path), on_bad_record="dead-letter", dead_letter=str(dead)
    )
    docs = {d["id"]: d for d in source.run(ctx())}
    assert set(docs) == {"a.md", "sub/b.txt"}
    assert docs["a.md"]["meta"] == {"source": "a.md", "title": "Queues"}
    assert docs["sub/b.txt"]["meta"]["title"] == "b"
    assert len(dead.read_text().splitlines()) == 1


def test_packaged_demo_corpus_and_questions() -> None:
    docs = list(JsonlDocuments(path=str(corpus_path())).run(ctx()))
    assert 300 <= len(docs) <= 1000
    assert len({d["id"] for d in docs}) == len(docs)
    assert all(d["meta"]["source"] for d in docs)
    questions = [json.loads(x) for x in questions_path().read_text().splitlines()]
    assert len(questions) >= 10 and all(q["query"].endswith("?") for q in questions)


# -- chunk -------------------------------------------------------------------------

sentence = st.lists(
    st.text(alphabet="abcdefghij", min_size=1, max_size=12), min_size=1, max_size=15
).map(lambda ws: " ".join(ws).capitalize() + ".")


@settings(max_examples=150, deadline=None)
@given(
    sentences=st.lists(sentence, min_size=1, max_size=30),
    max_tokens=st.integers(min_value=8, max_value=60),
)
def test_chunks_keep_every_word_in_order_within_the_limit(sentences, max_tokens):
    text = " ".join(sentences)
    chunks = Chunk(max_tokens=max_tokens).split(text)
    assert " ".join(chunks).split() == text.split()
    for chunk in chunks:
        assert approx_tokens(chunk) <= max_tokens or len(chunk.split()) == 1


@settings(max_examples=100, deadline=None)
@given(
    sentences=st.lists(sentence, min_size=1, max_size=30),
    overlap=st.integers(min_value=1, max_value=20),
)
def test_overlapping_chunks_cover_every_sentence_in_order(sentences, overlap):
    text = " ".join(sentences)
    chunks = Chunk(max_tokens=40, overlap=overlap).split(text)
    assert all(approx_tokens(c) <= 40 or len(c.split()) == 1 for c in chunks)
    joined = " ".join(chunks)
    position = 0
    for s in split_sentences(text):
        if approx_tokens(s) > 40:
            continue  # split between words; checked by the property above
        found = joined.find(s, position)
        assert found >= 0
        position = found


def test_chunk_items_carry_ids_and_meta() -> None:
    doc = {"id": "d1", "text": "One. Two two. Three three three.", "meta": {"k": 1}}
    chunks = Chunk(max_tokens=8).flat_map(doc)
    assert [c["id"] for c in chunks] == ["d1#0", "d1#1"]
    assert chunks[1] == {
        "id": "d1#1",
        "doc_id": "d1",
        "text": "Three three three.",
        "meta": {"k": 1, "chunk": 1},
    }
    with pytest.raises(RagError, match="empty text"):
        Chunk().flat_map({"id": "e", "text": " "})
    with pytest.raises(RagError, match="overlap"):
        Chunk(max_tokens=10, overlap=10)
