"""Engine processes: vLLM's OpenAI server as a managed subprocess, the tiny test model.

* ``vllm_server.VLLMServer``: one health-checked vLLM OpenAI server process;
* ``managed.launch``: the gateway's built-in ``launch_engine`` (``managed`` entries of
  a gateway config whose ``launcher`` is ``"vllm"``, the default);
* ``tiny_model.make_tiny_model``: the random-weight Llama for offline tests;
* ``sage engine make-tiny-model`` and ``sage engine start vllm`` (``commands``);
* ``sage engine emulate`` and ``sage engine fit-profile``, the engine emulator's
  commands (``sage_plugins.emulator``).

Nothing heavy is imported here: vLLM runs in its own process, torch/transformers load
only when the tiny model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

from sage_core import hookimpl

if TYPE_CHECKING:
    from sage_core.llm.registry import EngineSpec


@hookimpl(trylast=True)
def launch_engine(
    entry: Mapping[str, Any],
) -> tuple[EngineSpec, Callable[[], object], float] | None:
    """Start vLLM's OpenAI server for a ``managed`` entry of launcher ``"vllm"``."""
    if entry.get("launcher", "vllm") != "vllm":
        return None
    from sage_plugins.engines.managed import launch

    return launch(entry)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``make-tiny-model``, ``start vllm``, ``emulate`` and ``fit-profile`` to
    ``sage engine``."""
    from sage_plugins.emulator import emulate_cmd
    from sage_plugins.emulator.fit import fit_cmd
    from sage_plugins.engines.commands import make_tiny_model_cmd, start

    group = cli.commands.get("engine")
    if not isinstance(group, click.Group):  # a CLI without the core's engine group
        group = click.Group("engine", help="Inference engines.")
        cli.add_command(group)
    group.add_command(make_tiny_model_cmd)
    group.add_command(start)
    group.add_command(emulate_cmd)
    group.add_command(fit_cmd)
