"""Tool retrieval: tokens and stemming, field-weighted BM25, the weighted fusion and
its tuning (no model needed: the ``hash`` embedder or score matrices)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sage_core.backends import create_embedding_backend
from sage_core.tools import Tool, ToolError
from sage_plugins.agents import Agent, ToolIndex
from sage_plugins.agents.lexical import field_bm25, split_identifier, stem, tool_terms
from sage_plugins.rag.text import BM25


@pytest.mark.parametrize(
    "forms",
    [
        ["invoice", "invoices", "Invoices"],
        ["delete", "deleted", "deleting", "deletes"],
        ["category", "categories"],
        ["schedule", "scheduled", "scheduling"],
        ["match", "matches"],
    ],
)
def test_inflections_of_a_word_meet(forms: list[str]) -> None:
    assert len({tool_terms(f)[0] for f in forms}) == 1


def test_stem_never_shortens_below_three_letters() -> None:
    assert all(
        len(stem(w)) >= 3 for w in ["uses", "bus", "ties", "red", "see", "bases"]
    )


def test_identifiers_are_split_into_words() -> None:
    assert split_identifier("sendEmail") == "send email"
    assert split_identifier("get-weather_v2") == "get weather v2"
    assert split_identifier("HTTPGet") == "httpget"


def test_request_filler_and_stop_words_carry_no_term() -> None:
    assert tool_terms("Could you please send my emails now, thanks?") == [
        "send",
        "email",
    ]


def test_bm25_from_counts_matches_the_text_constructor() -> None:
    texts = ["red apples and pears", "green pears", "blue sky over the sea"]
    a = BM25(texts, tokenize=tool_terms)
    b = BM25.from_counts(
        [{t: 1.0 * tool_terms(x).count(t) for t in tool_terms(x)} for x in texts],
        tokenize=tool_terms,
    )
    assert a.scores("apple pear") == pytest.approx(b.scores("apple pear"))


def test_a_word_in_the_name_outweighs_the_same_word_in_a_parameter() -> None:
    bm = field_bm25(
        [
            {
                "name": "refund order",
                "description": "Give money back",
                "parameters": "",
            },
            {
                "name": "ship parcel",
                "description": "Send goods",
                "parameters": "refund: ignored",
            },
        ]
    )
    s = bm.scores("refund")
    assert s[0] > s[1] > 0


def _catalog_index(**kw: object) -> ToolIndex:
    return ToolIndex(
        ["get_weather", "send_email", "convert_currency"],
        [
            "Forecast of rain and temperature for a city",
            "Send a message to a contact",
            "Convert an amount of money",
        ],
        create_embedding_backend("hash"),
        parameters=[
            {"properties": {"city": {"type": "string"}}},
            {"properties": {"recipient": {"description": "mailbox address"}}},
            {"properties": {"target_currency": {"type": "string"}}},
        ],
        examples=[("is it sunny",), ("drop a line to Bob",), ("dollars to yen",)],
        **kw,  # type: ignore[arg-type]
    )


def test_parameters_and_examples_are_indexed() -> None:
    idx = _catalog_index()
    assert idx.top("which mailbox address", 1, "bm25") == ["send_email"]
    assert idx.top("how many yen for my dollars", 1, "bm25") == ["convert_currency"]
    assert idx.top("sunny in the city?", 1, "fusion") == ["get_weather"]


def test_index_from_registered_tools_uses_their_examples() -> None:
    tool = Tool(
        "pay_bill",
        "Pay it",
        {"properties": {}},
        fn=lambda: None,
        examples=("settle the tab",),
    )
    other = Tool("read_news", "Headlines", {"properties": {}}, fn=lambda: None)
    idx = ToolIndex.from_tools([tool, other])
    assert idx.top("settle my tab", 1, "bm25") == ["pay_bill"]


# scores on a 0.01 grid: distinct scores stay distinct after normalising
score_rows = arrays(
    np.float64, (3, 6), elements=st.integers(-100, 100).map(lambda x: x / 100)
)


@given(sem=score_rows, w=st.floats(0, 1))
def test_without_a_bm25_hit_the_fusion_keeps_the_embedding_order(
    sem: np.ndarray, w: float
) -> None:
    fused = ToolIndex.fuse(sem, np.zeros_like(sem), w)
    for f, s in zip(fused, sem, strict=True):
        # same order up to ties (the (1 - w) scaling may merge nearly equal scores)
        assert w == 1.0 or np.all(np.diff(s[np.argsort(-f, kind="stable")]) <= 1e-12)


@given(sem=score_rows, lex=score_rows.map(lambda a: 25 * (a + 1)))
def test_fusion_at_the_ends_of_the_weight_is_one_method(
    sem: np.ndarray, lex: np.ndarray
) -> None:
    at0, at1 = ToolIndex.fuse(sem, lex, 0.0), ToolIndex.fuse(sem, lex, 1.0)
    for row, s in zip(at0, sem, strict=True):
        assert np.argmax(row) in np.flatnonzero(s == s.max())
    for row, lx in zip(at1, lex, strict=True):
        assert np.argmax(row) in np.flatnonzero(lx == lx.max())


def test_a_weak_bm25_hit_does_not_outvote_a_clear_embedding_winner() -> None:
    sem = np.array([[0.9, 0.2, 0.1, 0.0]])
    lex = np.array([[0.0, 1.0, 0.0, 0.0]])  # a lone lexical hit on a wrong tool
    assert int(np.argmax(ToolIndex.fuse(sem, lex, 0.3))) == 0


def test_tune_picks_the_weight_from_labelled_queries() -> None:
    idx = _catalog_index(lexical_weight=0.0)
    queries = ["which mailbox address", "yen for dollars", "is it sunny"]
    gold = ["send_email", "convert_currency", "get_weather"]
    mrr = idx.tune(queries, gold, grid=[0.0, 0.5, 1.0])
    assert set(mrr) == {0.0, 0.5, 1.0}
    assert mrr[idx.lexical_weight] == max(mrr.values())
    assert all(0 < v <= 1 for v in mrr.values())


def test_retrieval_mistakes_are_named_errors() -> None:
    idx = _catalog_index()
    with pytest.raises(ToolError, match="one of"):
        idx.rank(["x"], "magic")
    with pytest.raises(ToolError, match=r"\[0, 1\]"):
        idx.rank(["x"], "fusion", weight=1.5)
    with pytest.raises(ToolError, match="not in the index"):
        idx.tune(["x"], ["no_such_tool"])
    with pytest.raises(ToolError, match="as many"):
        idx.tune(["x", "y"], ["send_email"])
    with pytest.raises(ToolError, match="needs an embedder"):
        ToolIndex(["a"], ["b"]).rank(["x"], "fusion")
    with pytest.raises(ToolError, match="length"):
        ToolIndex(["a", "b"], ["only one"])
    with pytest.raises(ToolError, match=r"\[0, 1\]"):
        ToolIndex(["a"], ["b"], lexical_weight=-0.1)
    with pytest.raises(ValueError, match="lexical_weight"):
        Agent(base_url="http://x", model="m", lexical_weight=2.0)
