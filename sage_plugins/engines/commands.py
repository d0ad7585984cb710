"""``sage engine make-tiny-model`` and ``sage engine start vllm``.

``make-tiny-model DIR`` writes the random-weight test model; ``start vllm --model
PATH`` runs vLLM's OpenAI server as a managed subprocess until Ctrl-C. Both join the
core's ``sage engine`` group (gateway engine administration) through the
``register_commands`` hook.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import click


@click.command("make-tiny-model")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True, help="Weight seed.")
@click.option(
    "--vocab-size",
    type=click.IntRange(300, 65536),
    default=4096,
    show_default=True,
    help="Size of the BPE vocabulary trained on standard-library source.",
)
@click.option("--force", is_flag=True, help="Rebuild even if DIR holds the model.")
def make_tiny_model_cmd(
    directory: str, seed: int, vocab_size: int, force: bool
) -> None:
    """Write a tiny random-weight Llama + trained tokenizer to DIRECTORY.

    Its answers are meaningless (random weights): it exists to test serving,
    streaming and timing offline. Prints the model's path as JSON.
    """
    from sage_plugins.engines.tiny_model import TinyModelError, make_tiny_model

    try:
        path = make_tiny_model(directory, seed=seed, vocab_size=vocab_size, force=force)
    except TinyModelError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"model": str(path), "meaningful": False}))


@click.group("start")
def start() -> None:
    """Start an inference engine as a managed subprocess."""


@start.command("vllm")
@click.option(
    "--model",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Model directory (e.g. one made by `sage engine make-tiny-model`).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", type=int, default=8000, show_default=True, help="TCP port.")
@click.option("--served-model-name", default=None, help="Model id (default: dir name).")
@click.option(
    "--runner",
    type=click.Choice(["generate", "pooling"]),
    default="generate",
    show_default=True,
    help="`pooling` serves /v1/embeddings from an embedding model.",
)
@click.option(
    "--max-model-len", type=int, default=512, show_default=True, help="Context length."
)
@click.option(
    "--python",
    default=None,
    help="Interpreter with vLLM installed (default: this one).",
)
@click.option("--log-file", default=None, help="Server log (default: a temp file).")
@click.option(
    "--startup-timeout",
    type=float,
    default=600,
    show_default=True,
    help="Seconds to wait for /health.",
)
def start_vllm(
    model: str,
    host: str,
    port: int,
    served_model_name: str | None,
    runner: str,
    max_model_len: int,
    python: str | None,
    log_file: str | None,
    startup_timeout: float,
) -> None:
    """Run vLLM's OpenAI server on MODEL until Ctrl-C / SIGTERM.

    Prints one JSON line (url, model, pid, log) once /health answers, then keeps
    the server running and stops it cleanly on exit.
    """
    from sage_plugins.engines.vllm_server import EngineStartError, VLLMServer

    server = VLLMServer(
        model,
        host=host,
        port=port,
        served_model_name=served_model_name,
        runner=runner,
        max_model_len=max_model_len,
        python=python,
        log_path=log_file,
        startup_timeout_s=startup_timeout,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        try:
            server.start()
        except EngineStartError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(
            json.dumps(
                {
                    "url": server.api_url,
                    "model": server.served_model_name,
                    "pid": server.pid,
                    "log": str(server.log_path),
                }
            )
        )
        while not stop.wait(1.0):
            if server.proc is not None and server.proc.poll() is not None:
                raise click.ClickException(
                    f"vLLM exited with code {server.proc.returncode}; see "
                    f"{server.log_path}"
                )
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
