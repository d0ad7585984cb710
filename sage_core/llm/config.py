"""Gateway configuration: engines, policy, router, limits, keys — from YAML or a dict.

Example (``sage gateway --config gateway.yaml``)::

    engines:
      - {id: llm-a, url: "http://127.0.0.1:8001", kind: llm, model: tiny}
      - {id: emb, url: "http://127.0.0.1:8003", kind: embedding, max_inflight: 4}
    managed:                      # engine processes the gateway starts and stops,
                                  # through the launch_engine hook (launcher: vllm)
      - {id: llm-c, model_dir: /path/to/model, served_model_name: tiny, port: 8005}
    policy: hybrid
    policy_config: {max_batch: 32, max_wait_ms: 5}
    router: device-packing        # the default (least-load unless engines share devices)
    embedding_router: least-load
    queue_limits: {chat: 256, completion: 256, embedding: 1024}
    rate_limit: {requests_per_s: 50, burst: 100}
    api_keys: [secret-1]          # inference routes (/v1/*)
    admin_keys: [admin-secret]    # admin routes (/admin/*); also SAGE_ADMIN_KEY
    allowed_engine_hosts: [10.0.0.0/24, gpu-7]  # more hosts POST /admin/engines accepts
    max_body_bytes: 4194304
    health: {interval_s: 2, timeout_s: 2, failures: 2, cooldown_s: 5}
    decision_log: decisions.jsonl # dispatch decisions, for `sage explain --dispatch-log`
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sage_core.llm.admission import DEFAULT_QUEUE_LIMITS, RateLimit
from sage_core.llm.engine_spec import EngineSpec, HealthConfig, specs_from
from sage_core.llm.errors import ConfigError


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the control plane and gateway need (see the module docstring)."""

    engines: tuple[EngineSpec, ...] = ()
    managed: tuple[Mapping[str, Any], ...] = ()
    # the best mean SLO attainment in bench/results/mixed.json (emulated time-sliced
    # devices) is priority with the device-packing router, 0.967; the plain policies
    # with least-load are within the run-to-run noise of each other (0.903-0.909);
    # without priority headers priority serves in arrival order
    policy: str = "priority"
    policy_config: Mapping[str, Any] = field(default_factory=dict)
    # device-packing where engines share devices with the other kind; elsewhere it
    # is least-load
    router: str = "device-packing"
    router_config: Mapping[str, Any] = field(default_factory=dict)
    embedding_router: str | None = None
    queue_limits: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_QUEUE_LIMITS)
    )
    rate_limit: RateLimit | None = None
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    allowed_engine_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    health: HealthConfig = field(default_factory=HealthConfig)
    max_attempts: int = 3
    request_timeout_s: float = 300.0
    queue_timeout_s: float = 120.0
    drain_timeout_s: float = 30.0
    decision_log: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GatewayConfig:
        """Build and validate.

        Raises:
            ConfigError: an unknown key or a malformed value (named in the message).
        """
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown gateway config key(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        kwargs: dict[str, Any] = {}
        try:
            for name, value in data.items():
                if name == "engines":
                    kwargs[name] = tuple(specs_from(value or ()))
                elif name == "managed":
                    kwargs[name] = tuple(dict(v) for v in value or ())
                elif name == "health":
                    kwargs[name] = HealthConfig(**(value or {}))
                elif name == "rate_limit":
                    kwargs[name] = RateLimit(**value) if value else None
                elif name in ("api_keys", "admin_keys", "allowed_engine_hosts"):
                    kwargs[name] = _strings(name, value)
                elif name in ("policy_config", "router_config", "queue_limits"):
                    if not isinstance(value or {}, Mapping):
                        raise ConfigError(f"{name} must be a mapping")
                    kwargs[name] = dict(value or {})
                elif name in ("max_body_bytes", "max_attempts"):
                    kwargs[name] = int(value)
                elif name.endswith("_s"):
                    kwargs[name] = float(value)
                else:
                    kwargs[name] = value
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid gateway config: {exc}") from None
        config = cls(**kwargs)
        _check_access(config)
        if config.max_body_bytes < 1024 or config.max_attempts < 1:
            raise ConfigError("max_body_bytes must be >= 1024 and max_attempts >= 1")
        return config

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> GatewayConfig:
        """Read a YAML (or JSON) config file.

        Raises:
            ConfigError: the file is missing, not YAML, or invalid.
        """
        import yaml

        file = Path(path)
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"gateway config {file} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"gateway config {file} is not valid YAML: {exc}"
            ) from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"gateway config {file} must be a mapping at top level")
        return cls.from_dict(data)

    def with_overrides(self, **changes: Any) -> GatewayConfig:
        """A copy with some fields replaced (CLI options); None values are ignored.

        Raises:
            ConfigError: the result is invalid (e.g. a key both inference and admin).
        """
        config = replace(self, **{k: v for k, v in changes.items() if v is not None})
        _check_access(config)
        return config


def _strings(name: str, value: Any) -> tuple[str, ...]:
    items = value or ()
    if isinstance(items, str) or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"{name} must be a list of non-empty strings")
    return tuple(items)


def _check_access(config: GatewayConfig) -> None:
    """Admin keys differ from inference keys; allowed engine networks parse."""
    if set(config.api_keys) & set(config.admin_keys):
        raise ConfigError(
            "a key is in both api_keys and admin_keys: admin keys must differ from "
            "inference keys, so that an inference key never opens /admin"
        )
    for entry in config.allowed_engine_hosts:
        if "/" in entry:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as exc:
                raise ConfigError(
                    f"allowed_engine_hosts: {entry!r} is not a network: {exc}"
                ) from None
