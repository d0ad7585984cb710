"""``sage engine fit-profile``: measure live engines and write an emulator profile.

Against a running OpenAI-compatible LLM server (``--llm-url``) it measures time to first
token over prompt lengths (TTFT = c0 + prefill_ms_per_token x P), the inter-token gap
of one sequence and of ``--batch`` concurrent ones (-> step_base_ms and
decode_ms_per_seq; the one sequence's gaps also give step_cv, how much a step's
time varies, which the emulator draws each step from), what the first token costs beyond a step (-> request_overhead_ms
= c0 - step_base_ms: the server's HTTP and tokenisation path) and the server's tokens
per word (-> tokens_per_word, which the emulator counts with); against an embedding
server (``--embedding-url``) the latency of batches of several sizes and lengths
(-> g = batch_base + ms_per_input x n + ms_per_token x tokens, least squares on
relative error, so the single short inputs most traffic sends weigh as much as the
large batches; tokens counted as the emulator counts them; batch_cv from
``CV_SAMPLES`` requests of one short input).
Fields it cannot measure (KV capacity and cost, scheduler limits) come from ``--base``.
Each shape is requested three times unmeasured (a CPU server's first requests of a
shape pay for compiling it) and then ``--repeats`` times; fits use the medians. The profile's
``source`` names the URLs, the date and each fit's relative RMS error.
Timings are taken at the client, so they include one HTTP round trip; the server's bare
round trip (``GET /v1/models``, median) comes off the fixed costs (request overhead,
batch base), since an emulated engine's own serving adds its own.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import click
import httpx

from sage_plugins.emulator.profile import profile_data

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "near",
    "seven",
    "quiet",
    "wizards",
]


def _text(words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(words))


async def _model(http: httpx.AsyncClient, url: str) -> str:
    data = (await http.get(f"{url}/v1/models")).json()["data"]
    return str(data[0]["id"])


async def _stream(
    http: httpx.AsyncClient, url: str, model: str, words: int, max_tokens: int
) -> tuple[float, list[float], int]:
    """(TTFT s, inter-token gaps s, prompt tokens) of one streamed completion."""
    body = {
        "model": model,
        "prompt": _text(words),
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    stamps: list[float] = []
    prompt = 0
    async with http.stream("POST", f"{url}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                prompt = int(event["usage"].get("prompt_tokens") or 0)
            if event.get("choices"):
                stamps.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return stamps[0] - start, gaps, prompt


async def _round_trip(http: httpx.AsyncClient, url: str, repeats: int) -> float:
    """Seconds of the server's bare HTTP round trip (``GET /v1/models``): it is in
    every timing taken at the client, and an emulated engine's own serving adds its
    own, so it comes off the fixed costs of the profile."""

    async def once() -> float:
        start = time.perf_counter()
        (await http.get(f"{url}/v1/models")).raise_for_status()
        return time.perf_counter() - start

    return await _median_of(max(5, repeats), once)


def _rel_rms(y: Any, fitted: Any) -> float:
    import numpy as np

    return float(np.sqrt(np.mean(((fitted - y) / np.maximum(y, 1e-9)) ** 2)))


WARMUP = 3  # unmeasured requests per shape: a CPU engine's first few of a shape
# are slow (2-3x for vLLM's pooling runner on MiniLM), not just the first


async def _samples_of(repeats: int, measure: Any) -> list[float]:
    """``repeats`` calls of ``measure()`` after ``WARMUP`` unmeasured ones (a
    server's first requests of a shape pay for compiling or caching it)."""
    for _ in range(WARMUP):
        await measure()
    return [await measure() for _ in range(max(1, repeats))]


async def _median_of(repeats: int, measure: Any) -> float:
    return statistics.median(await _samples_of(repeats, measure))


#: samples of one shape behind a fitted coefficient of variation
CV_SAMPLES = 30


def _cv(samples: list[float]) -> float:
    """Standard deviation over mean (0 for fewer than two samples)."""
    if len(samples) < 2 or statistics.fmean(samples) <= 0:
        return 0.0
    return statistics.pstdev(samples) / statistics.fmean(samples)


async def fit_llm(url: str, batch: int, repeats: int) -> tuple[dict[str, float], float]:
    import numpy as np

    async with httpx.AsyncClient(timeout=120) as http:
        model = await _model(http, url)
        rtt = await _round_trip(http, url, repeats)
        rows, per_word = [], []
        for words in (8, 32, 96, 192, 320):
            try:
                _, _, prompt = await _stream(http, url, model, words, 1)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 400 or words == 8:
                    raise
                break  # longer than the server's context: stop here

            async def ttft(words: int = words) -> float:
                return (await _stream(http, url, model, words, 1))[0]

            rows.append((prompt or words, await _median_of(repeats, ttft)))
            per_word.append((prompt or words) / words)
        xs = np.array([[1.0, p] for p, _ in rows])
        ys = np.array([t for _, t in rows])
        (c0, per_token), *_ = np.linalg.lstsq(xs, ys, rcond=None)
        ttft_error = _rel_rms(ys, xs @ np.array([c0, per_token]))
        one, many = [], []
        for _ in range(max(1, repeats)):
            one += (await _stream(http, url, model, 8, 32))[1]
            got = await asyncio.gather(
                *(_stream(http, url, model, 8, 32) for _ in range(batch))
            )
            many += [g for _, gaps, _ in got for g in gaps]
        gap_1 = statistics.median(one)
        gap_b = statistics.median(many)
    per_seq = max(0.0, (gap_b - gap_1) / max(1, batch - 1))
    step_base = max(0.0, gap_1 - per_seq)
    fitted = {
        "step_cv": _cv(one),
        "step_base_ms": step_base * 1000,
        "request_overhead_ms": max(0.0, float(c0) - step_base - rtt) * 1000,
        "prefill_ms_per_token": max(0.0, float(per_token)) * 1000,
        "decode_ms_per_seq": per_seq * 1000,
        "tokens_per_word": statistics.median(per_word),
    }
    return fitted, ttft_error


async def fit_embedding(url: str, repeats: int) -> tuple[dict[str, float], float]:
    import numpy as np

    async with httpx.AsyncClient(timeout=120) as http:
        model = await _model(http, url)
        rtt = await _round_trip(http, url, repeats)
        rows: list[tuple[int, int, float]] = []
        single: list[float] = []
        for n, words in [(1, 8), (1, 64), (4, 16), (8, 64), (16, 8), (32, 32)]:
            body = {"model": model, "input": [_text(words)] * n}

            async def took(body: dict[str, Any] = body) -> float:
                start = time.perf_counter()
                resp = await http.post(f"{url}/v1/embeddings", json=body)
                resp.raise_for_status()
                return time.perf_counter() - start

            if not single:  # the shape most traffic sends: its spread too
                single = await _samples_of(max(repeats, CV_SAMPLES), took)
                rows.append((n, n * words, statistics.median(single)))
                continue
            rows.append((n, n * words, await _median_of(repeats, took)))
    xs = np.array([[1.0, n, t] for n, t, _ in rows])
    ys = np.array([s for *_, s in rows])
    coef, *_ = np.linalg.lstsq(xs / ys[:, None], np.ones_like(ys), rcond=None)
    coef = np.maximum(coef, 0.0)
    fitted = {
        "batch_cv": _cv(single),
        "batch_base_ms": max(0.0, float(coef[0]) - rtt) * 1000,
        "ms_per_input": float(coef[1]) * 1000,
        "ms_per_word": float(coef[2]) * 1000,
    }
    return fitted, _rel_rms(ys, xs @ coef)


@click.command("fit-profile")
@click.option("--llm-url", default=None, help="Base URL of a live LLM server.")
@click.option("--embedding-url", default=None, help="Base URL of an embedding server.")
@click.option(
    "--base",
    default="cpu-2core-tiny-llama-minilm",
    show_default=True,
    help="Profile giving the fields that are not measured.",
)
@click.option(
    "--batch",
    type=int,
    default=8,
    show_default=True,
    help="Concurrent sequences for the decode-batch measurement.",
)
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--name", default="fitted", show_default=True)
@click.argument("out", type=click.Path(dir_okay=False))
def fit_cmd(
    llm_url: str | None,
    embedding_url: str | None,
    base: str,
    batch: int,
    repeats: int,
    name: str,
    out: str,
) -> None:
    """Measure live engines and write an emulator profile to OUT (JSON)."""
    if not llm_url and not embedding_url:
        raise click.UsageError("give --llm-url and/or --embedding-url")
    data = fit_profile(
        llm_url, embedding_url, base=base, batch=batch, repeats=repeats, name=name
    )
    Path(out).write_text(json.dumps(data, indent=2))
    click.echo(json.dumps({"profile": out, "source": data["source"]}))


def fit_profile(
    llm_url: str | None,
    embedding_url: str | None,
    *,
    base: str = "cpu-2core-tiny-llama-minilm",
    batch: int = 8,
    repeats: int = 3,
    name: str = "fitted",
) -> dict[str, Any]:
    """The profile ``base`` with the fields measured on the live engines replaced;
    ``source`` names the URLs, the date and each fit's relative RMS error, and
    ``fit_errors`` holds those errors (``llm_ttft``, ``embedding``)."""
    data = profile_data(base)
    base_name = data.get("name", base)
    notes, errors = [], {}
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if llm_url:
        fitted, error = asyncio.run(fit_llm(llm_url.rstrip("/"), batch, repeats))
        data["tokens_per_word"] = fitted.pop("tokens_per_word")
        data["llm"].update(fitted)
        errors["llm_ttft"] = error
        notes.append(f"LLM fitted from {llm_url} (TTFT fit rel. RMS error {error:.1%})")
    if embedding_url:
        fitted, error = asyncio.run(fit_embedding(embedding_url.rstrip("/"), repeats))
        # the emulator counts an input's tokens as words x tokens_per_word
        per_word = fitted.pop("ms_per_word")
        fitted["ms_per_token"] = per_word / float(data.get("tokens_per_word", 1.3))
        data["embedding"].update(fitted)
        errors["embedding"] = error
        notes.append(
            f"embedding fitted from {embedding_url} (rel. RMS error {error:.1%})"
        )
    data["name"] = name
    data["source"] = (
        f"Fitted by `sage engine fit-profile` on {when}: {'; '.join(notes)}. "
        f"Unmeasured fields from profile {base_name}."
    )
    data["fit_errors"] = errors
    return data
