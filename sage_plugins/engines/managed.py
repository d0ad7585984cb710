"""The built-in launcher of managed engines: vLLM servers the gateway starts and stops.

A ``managed`` entry of the gateway config names a model directory; through the
``launch_engine`` hook the gateway has :func:`launch` start ``VLLMServer`` for it
(``pooling`` runner for ``kind: embedding``) without waiting, and stops it (SIGTERM to
its process group) when the gateway shuts down or the engine is removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from sage_core.llm.errors import ConfigError
from sage_core.llm.registry import EngineSpec
from sage_plugins.engines.vllm_server import VLLMServer

KEYS = {
    "id",
    "launcher",
    "model_dir",
    "served_model_name",
    "kind",
    "port",
    "python",
    "max_inflight",
    "max_model_len",
    "extra_args",
    "startup_timeout_s",
}


def launch(entry: Mapping[str, Any]) -> tuple[EngineSpec, Callable[[], object], float]:
    """Start the vLLM server of one ``managed`` entry without waiting for it.

    Returns the engine spec to register, the function stopping the server, and the
    time (monotonic) until which it may still be loading.

    Raises:
        ConfigError: an unknown or missing key.
        EngineStartError: vLLM is not installed for the chosen interpreter.
    """
    unknown = sorted(set(entry) - KEYS)
    if unknown or "model_dir" not in entry:
        raise ConfigError(
            f"managed engine {entry.get('id', '?')}: needs model_dir; unknown "
            f"key(s) {', '.join(unknown) or 'none'}; known: {', '.join(sorted(KEYS))}"
        )
    kind = str(entry.get("kind", "llm"))
    served = str(entry.get("served_model_name") or "")
    timeout_s = float(entry.get("startup_timeout_s", 600.0))
    server = VLLMServer(
        entry["model_dir"],
        port=entry.get("port"),
        served_model_name=served or None,
        runner="pooling" if kind == "embedding" else "generate",
        max_model_len=int(
            entry.get("max_model_len", 256 if kind == "embedding" else 512)
        ),
        python=entry.get("python"),
        extra_args=[str(a) for a in entry.get("extra_args", ())],
        startup_timeout_s=timeout_s,
    )
    spec = EngineSpec(
        id=str(entry.get("id") or f"managed-{server.port}"),
        url=server.base_url,
        kind=kind,
        models=(server.served_model_name,),
        max_inflight=int(entry.get("max_inflight", 8)),
    )
    server.start(wait=False)
    return spec, server.stop, time.monotonic() + timeout_s
