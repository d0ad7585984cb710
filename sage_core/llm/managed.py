"""Managed engines: engine processes the gateway starts, health-checks and stops itself.

A ``managed`` entry of the gateway config describes an engine process; the gateway asks
the ``launch_engine`` hook to start it (the built-in launcher, in
``sage_plugins.engines``, runs vLLM's OpenAI server), registers it as ``starting`` —
requests for its model wait instead of failing while it loads — and calls the stop
function the launcher returned when the gateway shuts down or the engine is removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sage_core.llm.errors import ConfigError
from sage_core.llm.registry import EngineSpec


def launch(entry: Mapping[str, Any]) -> tuple[EngineSpec, Callable[[], object], float]:
    """Start the engine of one ``managed`` entry through the ``launch_engine`` hook,
    without waiting for it to load.

    Returns the engine spec to register, the function stopping the engine, and the
    time (monotonic) until which it may still be loading.

    Raises:
        ConfigError: no installed plugin launches this entry, or the entry is
            malformed (the launcher names the key).
    """
    from sage_core.plugins import load_plugins, pm

    load_plugins()
    launched = pm.hook.launch_engine(entry=entry)
    if launched is None:
        raise ConfigError(
            f"managed engine {entry.get('id', '?')}: no installed plugin launches "
            f"engines of launcher {entry.get('launcher', 'vllm')!r}; `sage plugins "
            f"--hook launch_engine` lists the launchers (the built-in one is in "
            f"sage-dask's sage_plugins.engines)"
        )
    spec, stop, loading_until = launched
    return spec, stop, float(loading_until)
