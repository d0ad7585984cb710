"""Embedding batches: many ``/v1/embeddings`` requests merged into one engine call and
the answer split back, each caller getting exactly its own vectors in its own order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sage_core.llm.errors import UpstreamError

if TYPE_CHECKING:
    from sage_core.llm.classify import LLMRequest


def _as_list(value: Any) -> list[Any]:
    """The inputs of one request as a list (a string or one token list is one input)."""
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return [value]
    return list(value)


def merge(batch: Sequence[LLMRequest]) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """One body holding every request's inputs, and each request's (start, count)."""
    inputs: list[Any] = []
    spans: list[tuple[int, int]] = []
    for request in batch:
        items = _as_list(request.body["input"])
        spans.append((len(inputs), len(items)))
        inputs.extend(items)
    body = dict(batch[0].body)
    body["input"] = inputs
    return body, spans


def _shares(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder; sums exactly)."""
    weight_sum = sum(weights) or 1
    raw = [total * w / weight_sum for w in weights]
    shares = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - shares[i], reverse=True)
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def split(
    data: dict[str, Any], batch: Sequence[LLMRequest], spans: Sequence[tuple[int, int]]
) -> list[tuple[bytes, int]]:
    """Per request: its JSON response body and its prompt tokens.

    The engine reports usage for the whole call; it is shared out in proportion to
    each request's estimated input tokens (the total is preserved).

    Raises:
        UpstreamError: the engine returned a different number of vectors.
    """
    rows = data.get("data")
    expected = sum(count for _, count in spans)
    if not isinstance(rows, list) or len(rows) != expected:
        got = len(rows) if isinstance(rows, list) else "no"
        raise UpstreamError(
            f"the embedding engine returned {got} vectors for {expected} inputs"
        )
    rows = sorted(rows, key=lambda row: int(row.get("index", 0)))
    usage = data.get("usage") or {}
    total = int(usage.get("prompt_tokens") or 0)
    shares = _shares(total, [max(1, r.tokens) for r in batch])
    out: list[tuple[bytes, int]] = []
    for (start, count), share in zip(spans, shares, strict=True):
        mine = [
            {**row, "index": i} for i, row in enumerate(rows[start : start + count])
        ]
        body = {
            key: value for key, value in data.items() if key not in ("data", "usage")
        }
        body.update(
            {
                "object": "list",
                "data": mine,
                "usage": {"prompt_tokens": share, "total_tokens": share},
            }
        )
        out.append((json.dumps(body).encode(), share))
    return out
