"""What answers the demo's questions: a real server, the extractive backend, or the
tiny random-weight model on a local engine."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import click

EXTRACTIVE = "extractive"
SERVER = "server"
TINY = "tiny-model"

INSTALL = (
    "install the inference extras: pip install 'sage-dask[embed,llm]' (and vLLM: pip "
    "install --no-deps -r requirements/inference.lock.txt), or use --embedder hash "
    "and --llm-url"
)


@dataclass(frozen=True, slots=True)
class Answerer:
    """The ``generate`` stage's backend, its config, and how to label its answers.

    Attributes:
        kind: ``"extractive"``, ``"server"`` or ``"tiny-model"``.
        backend: the generation backend's plugin name.
        config: its ``backend_config``.
        tokenizer: a tokenizer directory for token budgets (None: approximate).
        parallelism: ``generate`` replicas, so several questions are in flight.
    """

    kind: str
    backend: str
    config: Mapping[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    parallelism: int = 1

    @property
    def meaningful(self) -> bool:
        """False for the random-weight model, whose text is noise."""
        return self.kind != TINY


def need(module: str, what: str) -> None:
    """Raise a ClickException naming the extras to install when ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        raise click.ClickException(f"{what} is not installed; {INSTALL}")


def server(llm_url: str, model: str | None) -> Answerer:
    """A real OpenAI-compatible server; checks that it serves ``model``."""
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
    return Answerer(SERVER, "openai", {"base_url": llm_url, "model": model}, None, 4)


def extractive(embed: Mapping[str, Any]) -> Answerer:
    """The extractive backend, scoring sentences with the pipeline's embedder."""
    config = {
        "embedder": embed["backend"],
        "embedder_config": dict(embed.get("backend_config", {})),
    }
    return Answerer(EXTRACTIVE, "extractive", config)


@contextlib.contextmanager
def tiny_model(engine: str, startup_timeout: float) -> Iterator[Answerer]:
    """The tiny random-weight model on vLLM's OpenAI server (``engine`` vllm, or auto
    with vLLM installed) or in-process with transformers; the server stops on exit."""
    need("transformers", "transformers (for the local tiny model)")
    from sage_core.common.settings import cache_dir, state_dir
    from sage_plugins.engines.tiny_model import make_tiny_model

    click.echo("Preparing the tiny local model ...", err=True)
    path = make_tiny_model(cache_dir() / "models" / "tiny")
    use_vllm = engine == "vllm" or (
        engine == "auto" and importlib.util.find_spec("vllm") is not None
    )
    if not use_vllm:
        yield Answerer(TINY, "transformers", {"model": str(path)}, str(path), 1)
        return
    from sage_plugins.engines.vllm_server import EngineStartError, VLLMServer

    engine_server = VLLMServer(
        path,
        served_model_name="tiny",
        startup_timeout_s=startup_timeout,
        log_path=state_dir() / "logs" / "demo-vllm.log",
    )
    click.echo(
        "Starting vLLM's OpenAI server on the tiny model (40 s to a few minutes on a "
        f"CPU; log: {engine_server.log_path}) ...",
        err=True,
    )
    try:
        engine_server.start()
    except EngineStartError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        config = {"base_url": engine_server.api_url, "model": "tiny"}
        yield Answerer(TINY, "openai", config, str(path), 4)
    finally:
        engine_server.stop()


@contextlib.contextmanager
def answerer(
    *,
    llm_url: str | None,
    model: str | None,
    tiny: bool,
    engine: str,
    startup_timeout: float,
    embed: Mapping[str, Any],
) -> Iterator[Answerer]:
    """The answerer the demo's options ask for: ``--llm-url`` a real server,
    ``--tiny-model`` the random-weight model, else the extractive backend."""
    if llm_url and tiny:
        raise click.UsageError("--llm-url and --tiny-model exclude each other")
    if model and not llm_url:
        raise click.UsageError("--model names a model at --llm-url; give --llm-url")
    if llm_url:
        yield server(llm_url, model)
    elif tiny:
        with tiny_model(engine, startup_timeout) as chosen:
            yield chosen
    else:
        yield extractive(embed)
