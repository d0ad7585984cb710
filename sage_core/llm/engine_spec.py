"""How to reach an engine and how to check it: the static half of the registry.

:class:`EngineSpec` comes from the gateway config, from ``POST /admin/engines`` or
from ``sage engine add``; :class:`HealthConfig` tunes health checks and the circuit
breaker of :class:`~sage_core.llm.registry.EngineRegistry`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sage_core.llm.errors import ConfigError

ENGINE_KINDS = ("llm", "embedding")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """How to reach one engine.

    Attributes:
        id: unique name (letters, digits, ``.``, ``_``, ``-``).
        url: base URL without ``/v1`` (``http://127.0.0.1:8001``).
        kind: ``"llm"`` or ``"embedding"``.
        models: model names it serves; empty = ask its ``/v1/models``.
        max_inflight: requests (or embedding batches) sent to it at once.
        api_key: bearer token the engine expects, if any.
        device: label of the hardware it runs on; engines with the same label share
            it (and slow each other down), which device-aware policies and routers
            take into account. None: not shared with any other engine.
    """

    id: str
    url: str
    kind: str = "llm"
    models: tuple[str, ...] = ()
    max_inflight: int = 8
    api_key: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ConfigError(
                f"engine id {self.id!r} is invalid: use 1-64 letters, digits, '.', "
                f"'_' or '-'"
            )
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError on a port out of range
            valid = bool(re.match(r"^https?://[^/\s]+", self.url) and parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            raise ConfigError(
                f"engine {self.id}: url {self.url!r} must look like "
                f"http://host:port (without /v1)"
            )
        if self.kind not in ENGINE_KINDS:
            raise ConfigError(
                f"engine {self.id}: kind {self.kind!r} must be one of "
                f"{', '.join(ENGINE_KINDS)}"
            )
        if self.max_inflight < 1:
            raise ConfigError(f"engine {self.id}: max_inflight must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineSpec:
        """Build from config/JSON: ``model`` (one) or ``models`` (list) accepted.

        Raises:
            ConfigError: a field is missing, unknown or malformed.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"an engine entry must be a mapping, got {data!r}")
        known = {
            "id",
            "url",
            "kind",
            "model",
            "models",
            "max_inflight",
            "api_key",
            "device",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"engine entry has unknown field(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        if "url" not in data:
            raise ConfigError(f"engine entry {dict(data)!r} needs a 'url'")
        url = str(data["url"]).rstrip("/")
        url = url.removesuffix("/v1")
        models = data.get("models") or ([data["model"]] if data.get("model") else [])
        if not isinstance(models, list | tuple) or not all(
            isinstance(m, str) for m in models
        ):
            raise ConfigError(
                f"engine {data.get('id')}: models must be a list of names"
            )
        engine_id = data.get("id") or re.sub(
            r"[^A-Za-z0-9._-]", "-", url.split("//")[-1]
        )
        try:
            max_inflight = int(data.get("max_inflight", 8))
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(
                f"engine {engine_id}: max_inflight must be an integer"
            ) from None
        api_key = data.get("api_key")
        if api_key is not None and not isinstance(api_key, str):
            raise ConfigError(f"engine {engine_id}: api_key must be a string")
        return cls(
            id=str(engine_id),
            url=url,
            kind=str(data.get("kind", "llm")),
            models=tuple(models),
            max_inflight=max_inflight,
            api_key=api_key,
            device=None if data.get("device") is None else str(data["device"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "kind": self.kind,
            "models": list(self.models),
            "max_inflight": self.max_inflight,
            "device": self.device,
        }


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Health checking and circuit breaking.

    Attributes:
        interval_s: time between health checks of one engine.
        timeout_s: a health check slower than this fails.
        failures: consecutive failures (checks or dispatches) that trip the breaker.
        cooldown_s: how long a tripped engine stays out before checks may restore it.
    """

    interval_s: float = 2.0
    timeout_s: float = 2.0
    failures: int = 2
    cooldown_s: float = 5.0


def specs_from(entries: Iterable[Mapping[str, Any]]) -> list[EngineSpec]:
    """Engine specs from config entries; duplicate ids raise ConfigError."""
    specs = [EngineSpec.from_dict(entry) for entry in entries]
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise ConfigError(f"engine id {spec.id!r} appears twice in the config")
        seen.add(spec.id)
    return specs
