"""Request classification and admission (queue bounds, rate limits)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core.llm.admission import Admission, RateLimit
from sage_core.llm.batching import merge, split
from sage_core.llm.classify import LLMRequest, classify
from sage_core.llm.errors import ConfigError, InvalidRequestError, OverloadedError

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


def test_chat_request_with_priority_and_deadline_headers() -> None:
    req = classify(
        "/v1/chat/completions",
        {**CHAT, "max_tokens": 7},
        {"x-request-priority": "high", "x-slo-deadline-ms": "250"},
    )
    assert (req.kind, req.model, req.priority, req.slo_ms) == ("chat", "m", 2, 250.0)
    assert req.deadline == pytest.approx(req.arrival + 0.25)
    assert req.tokens >= 7 and req.prefix == "hello there"


def test_body_fields_steer_and_are_not_forwarded() -> None:
    body = {"model": "e", "input": ["a", "b"], "priority": 5, "slo_deadline_ms": 40}
    req = classify("/v1/embeddings", body, {})
    assert (req.kind, req.priority, req.slo_ms, req.size) == ("embedding", 5, 40.0, 2)
    assert req.body == {"model": "e", "input": ["a", "b"]}


def test_no_deadline_means_infinite() -> None:
    req = classify("/v1/completions", {"model": "m", "prompt": [1, 2, 3]}, {})
    assert math.isinf(req.deadline) and req.kind == "completion"


@pytest.mark.parametrize(
    ("path", "body", "headers", "param"),
    [
        ("/v1/chat/completions", {"messages": []}, {}, "model"),
        ("/v1/chat/completions", {"model": "m", "messages": []}, {}, "messages"),
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"content": "x"}]},
            {},
            "messages[0].role",
        ),
        ("/v1/completions", {"model": "m"}, {}, "prompt"),
        (
            "/v1/completions",
            {"model": "m", "prompt": "x", "max_tokens": 0},
            {},
            "max_tokens",
        ),
        ("/v1/embeddings", {"model": "e", "input": []}, {}, "input"),
        ("/v1/embeddings", {"model": "e", "input": "x", "stream": True}, {}, "stream"),
        (
            "/v1/embeddings",
            {"model": "e", "input": "x"},
            {"x-request-priority": "99"},
            "priority",
        ),
        (
            "/v1/embeddings",
            {"model": "e", "input": "x"},
            {"x-slo-deadline-ms": "-1"},
            "slo_deadline_ms",
        ),
    ],
)
def test_invalid_requests_name_the_field(path, body, headers, param) -> None:
    with pytest.raises(InvalidRequestError) as info:
        classify(path, body, headers)
    assert info.value.param == param and info.value.status == 400


def test_queue_bound_gives_429_with_retry_after() -> None:
    admission = Admission(queue_limits={"chat": 2})
    admission.admit("chat", None)
    admission.admit("chat", None)
    with pytest.raises(OverloadedError) as info:
        admission.admit("chat", None)
    assert info.value.status == 429 and int(info.value.headers["Retry-After"]) >= 1
    admission.admit("embedding", None)  # other classes are unaffected
    admission.left_queue("chat", dispatched=True)
    admission.admit("chat", None)


def test_rate_limit_is_per_api_key() -> None:
    admission = Admission(rate_limit=RateLimit(requests_per_s=0.5, burst=2))
    admission.admit("chat", "k1")
    admission.admit("chat", "k1")
    with pytest.raises(OverloadedError, match="rate limit") as info:
        admission.admit("chat", "k1")
    assert info.value.retry_after_s >= 1
    admission.admit("chat", "k2")


def test_bad_queue_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown class"):
        Admission(queue_limits={"images": 3})
    with pytest.raises(ConfigError):
        RateLimit(requests_per_s=0, burst=1)


@given(
    st.lists(
        st.one_of(
            st.text(min_size=1, max_size=5),
            st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 500),
)
def test_batched_embeddings_split_back_exactly(inputs, total_tokens) -> None:
    batch = [
        LLMRequest(
            kind="embedding",
            model="e",
            body={"model": "e", "input": x},
            tokens=len(str(x)),
            seq=i,
        )
        for i, x in enumerate(inputs)
    ]
    body, spans = merge(batch)
    rows = [
        {"object": "embedding", "index": i, "embedding": [float(i)]}
        for i in range(len(body["input"]))
    ][::-1]
    answers = split(
        {"data": rows, "model": "e", "usage": {"prompt_tokens": total_tokens}},
        batch,
        spans,
    )
    import json

    assert sum(tokens for _, tokens in answers) == total_tokens
    for (payload, _), (start, count) in zip(answers, spans, strict=True):
        data = json.loads(payload)["data"]
        assert [d["index"] for d in data] == list(range(count))
        assert [d["embedding"][0] for d in data] == [
            float(start + i) for i in range(count)
        ]


def test_managed_engine_entries_are_validated() -> None:
    from sage_core.llm.managed import launch

    with pytest.raises(ConfigError, match="model_dir"):
        launch({"id": "m", "served_model_name": "x"})
    with pytest.raises(ConfigError, match="gpu"):
        launch({"model_dir": "/m", "gpu": 1})
