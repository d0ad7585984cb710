"""The ``views`` tool retrieval: its signals (card, examples, late interaction over
token embeddings, soft BM25 over word embeddings, BM25), their weighted fusion and
its tuning. No model needed: the ``hash`` embedder, and a test double that gives
each word's hashed vector as its token embedding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core.backends import BackendError, TokenVectors, create_embedding_backend
from sage_core.tools import ToolError
from sage_plugins.agents import ToolIndex
from sage_plugins.agents.tool_signals import (
    ExampleMatcher,
    WordMatcher,
    clean_query,
    simplex_grid,
)
from sage_plugins.backends.hashing import HashEmbedding

NAMES = ["restore_invoice", "create_invoice", "restore_flight", "create_flight"]
DESCS = [
    "Restore a deleted invoice",
    "Create a new invoice",
    "Restore a deleted flight booking",
    "Create a new flight booking",
]


class WordTokensEmbedderForTests(HashEmbedding):
    """Test double: the hash embedder, whose 'token embeddings' are the hashed
    vectors of each word (no context), so late interaction reduces to matching
    words one by one."""

    capabilities: ClassVar[tuple[str, ...]] = ("embed", "embed_tokens")

    def embed_tokens(self, texts: Sequence[str]) -> list[TokenVectors]:
        out = []
        for text in texts:
            words = text.lower().replace(":", " ").replace(".", " ").split()
            vectors = self.embed(words) if words else np.zeros((0, self.dim))
            out.append(TokenVectors(tuple(words), np.asarray(vectors, np.float32)))
        return out


def _index(embedder=None, **kw) -> ToolIndex:
    return ToolIndex(NAMES, DESCS, embedder or create_embedding_backend("hash"), **kw)


def test_a_backend_without_token_embeddings_says_so() -> None:
    with pytest.raises(BackendError, match="does not give token embeddings"):
        create_embedding_backend("hash").embed_tokens(["a"])


def test_views_leave_out_the_token_signal_when_the_embedder_has_none() -> None:
    assert "tokens" not in _index().signals
    assert "tokens" in _index(WordTokensEmbedderForTests()).signals
    assert ToolIndex(NAMES, DESCS).signals == ("bm25",)
    # the default weights still rank: the others are rescaled
    assert _index().top("restore my invoice", 1, "views") == ["restore_invoice"]


def test_late_interaction_matches_the_verb_and_the_object_each() -> None:
    idx = _index(WordTokensEmbedderForTests(), view_weights={"tokens": 1.0})
    assert idx.top("could you restore the flight", 1, "views") == ["restore_flight"]
    assert idx.top("create an invoice, thanks", 1, "views") == ["create_invoice"]
    scores = idx.signal_scores(["restore flight"], ["tokens"])["tokens"][0]
    # both words match restore_flight, one word restore_invoice and create_flight,
    # none create_invoice (min-max normalised: 1, about 1/2, 0)
    assert scores[2] == 1.0 and scores[1] == 0.0
    assert scores[0] == pytest.approx(0.5, abs=0.15)
    assert scores[3] == pytest.approx(0.5, abs=0.15)


def test_the_best_example_counts_and_tools_without_examples_score_lowest() -> None:
    emb = create_embedding_backend("hash")
    matcher = ExampleMatcher(emb, [["bring back a bill", "undelete bill"], [], ["x"]])
    q = np.asarray(emb.embed(["undelete bill"]), np.float32)
    row = matcher.scores(q)[0]
    assert row[0] == pytest.approx(1.0, abs=1e-6)
    assert row[1] == min(row)
    assert np.all(np.isfinite(ExampleMatcher(emb, [[], []]).scores(q)))


def test_a_word_every_tool_has_weighs_less_than_a_rare_one() -> None:
    emb = create_embedding_backend("hash")
    words = WordMatcher(emb, ["shared alpha", "shared beta", "shared gamma"])
    s = words.scores(["shared alpha"])[0]
    assert s[0] > s[1] == s[2] > 0  # "shared" counts a little everywhere
    assert words.scores(["alpha"])[0][0] > words.scores(["shared"])[0][0]


def test_requests_are_matched_without_their_filler() -> None:
    assert clean_query("Could you please send my invoice, thanks?") == "send invoice"
    assert clean_query("please") == "please"


@given(st.integers(1, 5), st.sampled_from([0.5, 0.25, 0.2, 0.1]))
def test_the_weight_grid_covers_the_simplex_once(signals: int, step: float) -> None:
    names = [f"s{i}" for i in range(signals)]
    grid = simplex_grid(names, step)
    units = round(1 / step)
    assert len(grid) == math.comb(units + signals - 1, signals - 1)
    assert len({tuple(sorted(w.items())) for w in grid}) == len(grid)
    for w in grid:
        assert sum(w.values()) == pytest.approx(1.0)
        assert all(round(v / step, 6).is_integer() and v >= 0 for v in w.values())


def test_a_step_that_does_not_divide_one_is_refused() -> None:
    with pytest.raises(ValueError, match="divide 1"):
        simplex_grid(["a", "b"], 0.3)
    with pytest.raises(ToolError, match="divide 1"):
        _index().tune_views(["x"], ["create_invoice"], step=0.3)


def test_tuning_never_picks_a_signal_that_scores_every_tool_alike() -> None:
    # no tool has examples: that signal ties every tool, so it ranks the gold last
    idx = _index()
    queries = ["restore the invoice", "new flight booking", "restore flight"]
    gold = ["restore_invoice", "create_flight", "restore_flight"]
    tried = idx.tune_views(queries, gold, step=0.5, signals=["examples", "bm25"])
    assert idx.view_weights["examples"] < 1.0
    assert tried[0][1] == max(m for _, m in tried)
    only_examples = [m for w, m in tried if w["examples"] == 1.0]
    assert only_examples == [pytest.approx(1 / len(NAMES))]


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"card": -0.1, "bm25": 1.0}, ">= 0"),
        ({"card": 0.0}, "not all 0"),
        ({"cards": 1.0}, "unknown view signals"),
        ({"card": float("nan"), "bm25": 1.0}, ">= 0"),
    ],
)
def test_bad_view_weights_are_named(weights: dict[str, float], match: str) -> None:
    with pytest.raises(ToolError, match=match):
        _index(view_weights=weights)


def test_weights_only_on_signals_the_index_cannot_give_are_refused() -> None:
    idx = _index(view_weights={"tokens": 1.0})
    with pytest.raises(ToolError, match="no view weight is above 0"):
        idx.rank(["restore invoice"], "views")
    with pytest.raises(ToolError, match="token embeddings"):
        idx.signal_scores(["x"], ["tokens"])


def test_no_queries_rank_to_nothing() -> None:
    assert _index(WordTokensEmbedderForTests()).rank([], "views") == []
