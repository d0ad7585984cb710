"""rerank, refine, prompt and generate called directly (open/map_batch/close)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_core.contract import ContractError
from sage_core.functions import OperatorContext
from sage_plugins.rag.common import MissingFieldError, RagError
from sage_plugins.rag.context import Refine, Rerank
from sage_plugins.rag.generation import Generate, Prompt
from sage_plugins.rag.text import BM25, approx_tokens

CONTEXTS = [
    {
        "id": "a",
        "text": "The gateway routes chat requests to engines. It keeps a queue.",
    },
    {
        "id": "b",
        "text": "Backpressure stops a fast source. Bounded queues keep memory flat. "
        "Nothing is dropped.",
    },
    {"id": "c", "text": "Vector indexes answer nearest neighbour queries quickly."},
]
ITEM = {"query": "How do bounded queues keep memory flat?", "contexts": CONTEXTS}


def run(op, items):
    op.open(OperatorContext(type(op).__name__.lower()))
    try:
        return op.map_batch(items)
    finally:
        op.close()


def test_bm25_scores_shared_rare_terms_higher() -> None:
    scores = BM25([c["text"] for c in CONTEXTS]).scores("bounded queues memory")
    assert scores[1] > 0 and scores[0] == scores[2] == 0  # "queue" != "queues"


@pytest.mark.parametrize(
    ("method", "config"),
    [("bm25", {}), ("embedding", {"backend": "hash", "backend_config": {"dim": 256}})],
)
def test_rerank_puts_the_relevant_context_first(method, config) -> None:
    [out] = run(Rerank(method=method, top_n=2, **config), [ITEM])
    assert out["contexts"][0]["id"] == "b"
    assert len(out["contexts"]) == 2
    assert out["contexts"][0]["rerank_score"] >= out["contexts"][1]["rerank_score"]
    assert out["query"] == ITEM["query"]


def test_refine_selects_relevant_sentences_within_the_budget() -> None:
    [out] = run(Refine(budget_tokens=20), [ITEM])
    assert "Bounded queues keep memory flat." in out["context"]
    ranks = [line.split("]")[0] for line in out["context"].splitlines()]
    assert ranks == sorted(ranks) and "[3" not in ranks
    info = out["refine"]
    assert info["tokens_out"] <= 20 < info["tokens_in"]
    assert info["rate"] == pytest.approx(info["tokens_out"] / info["tokens_in"])
    assert info["sentences_in"] == 6 and 0 < info["sentences_out"] < 6


@settings(max_examples=60, deadline=None)
@given(budget=st.integers(min_value=1, max_value=80))
def test_refine_never_exceeds_its_budget_and_keeps_order(budget) -> None:
    [out] = Refine(budget_tokens=budget).map_batch([ITEM])
    assert out["refine"]["tokens_out"] <= budget
    text = " ".join(c["text"] for c in CONTEXTS)
    position = -1
    for line in out["context"].splitlines():
        body = line.split("] ", 1)[1]
        found = text.find(body.split(". ")[0])
        assert found > position
        position = found


def test_refine_by_embedding_and_its_contract() -> None:
    refine = Refine(
        method="embedding",
        budget_tokens=15,
        backend="hash",
        backend_config={"dim": 256},
    )
    [out] = run(refine, [ITEM])
    assert out["refine"]["tokens_out"] <= 15 and out["context"]
    assert Refine.contract_for({"method": "bm25"}).gpu == 0
    gpu = Refine.contract_for(
        {"method": "embedding", "backend_config": {"device": "cuda:0"}}
    )
    assert gpu.gpu == 1
    with pytest.raises(RagError, match="method"):
        Refine(method="magic")


def test_prompt_fills_the_template_within_the_token_budget() -> None:
    [out] = Prompt(max_prompt_tokens=200).map_batch([ITEM])
    user = out["messages"][-1]["content"]
    assert out["messages"][0]["role"] == "system"
    assert "[1] The gateway" in user and ITEM["query"] in user
    assert out["prompt_info"]["tokens"] <= 200
    assert out["prompt_info"]["contexts_used"] == 3
    small = Prompt(max_prompt_tokens=80, chat=False, system=None)
    [cut] = small.map_batch([ITEM])
    assert approx_tokens(cut["prompt"]) <= 80
    assert cut["prompt_info"]["truncated"] and cut["prompt_info"]["contexts_used"] < 3
    refined = {**ITEM, "context": "[2] Bounded queues keep memory flat."}
    [used] = Prompt(chat=False).map_batch([refined])
    assert "[2] Bounded queues keep memory flat." in used["prompt"]
    assert "[1] The gateway" not in used["prompt"]


def test_prompt_cuts_an_over_long_best_context_at_a_word() -> None:
    long_item = {"query": "q?", "contexts": [{"text": "word " * 500}]}
    [out] = Prompt(max_prompt_tokens=100, chat=False).map_batch([long_item])
    assert out["prompt_info"]["truncated"] and approx_tokens(out["prompt"]) <= 100


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"template": "no fields"}, "exactly the fields"),
        ({"template": "{query} {context} {extra}"}, "exactly the fields"),
        ({"max_prompt_tokens": 5}, "alone take"),
    ],
)
def test_prompt_rejects_bad_templates_and_budgets(kwargs, match) -> None:
    with pytest.raises(RagError, match=match):
        Prompt(**kwargs).map_batch([ITEM])


def test_generate_answers_with_timing_through_an_openai_server(engine_double) -> None:
    engine = engine_double("m", token_delay_s=0.001)
    config = {"base_url": engine.url + "/v1", "model": "m"}
    items = Prompt().map_batch([ITEM, {**ITEM, "query": "And the gateway?"}])
    plain = run(Generate(backend_config=config, max_tokens=4), items)
    assert [len(o["answer"].split()) for o in plain] == [4, 4]
    assert plain[0]["generation"]["completion_tokens"] == 4
    assert plain[0]["generation"]["ttft_s"] is None
    streamed = run(Generate(backend_config=config, max_tokens=5, stream=True), items)
    timing = streamed[1]["generation"]
    assert timing["completion_tokens"] == 5 and timing["ttft_s"] > 0
    assert timing["tbt_s"] is not None and timing["model"] == "m"
    [raw] = run(Generate(backend_config=config, max_tokens=2), [{"prompt": "x"}])
    assert raw["generation"]["completion_tokens"] == 2
    with pytest.raises(MissingFieldError, match="no 'prompt' field"):
        run(Generate(backend_config=config), [{"query": "not prompted"}])


def test_generate_contract_declares_gpu_and_streaming_from_config() -> None:
    assert Generate.contract_for({}).gpu == 0  # openai: the engine runs elsewhere
    vllm = Generate.contract_for({"backend": "vllm", "stream": True})
    assert vllm.gpu == 1 and vllm.streaming
    assert (
        Generate.contract_for({"backend": "vllm", "backend_config": {"gpu": 0}}).gpu
        == 0
    )
    with pytest.raises(ContractError, match="generate: unknown backend"):
        Generate.contract_for({"backend": "vlm"})
