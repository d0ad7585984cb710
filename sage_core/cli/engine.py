"""``sage engine``: the group of engine commands.

The core attaches gateway engine administration (``add``/``list``/``remove``, see
``engine_admin.py``); plugins add engine tooling through ``register_commands`` (the
built-in ``sage_plugins.engines`` adds ``make-tiny-model`` and ``start vllm``).
"""

from __future__ import annotations

import click


@click.group("engine")
def engine() -> None:
    """Inference engines: gateway engine admin, and what plugins add (tiny test
    model, vLLM server)."""
