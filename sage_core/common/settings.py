"""Where SAGE keeps its files and which ports it uses by default.

Paths follow the XDG base-directory specification; ``SAGE_HOME`` overrides all of them
(useful for tests and containers).
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "sage"
DEFAULT_SCHEDULER_PORT = 8786
DEFAULT_DASHBOARD_ADDRESS = ":8787"
DEFAULT_GATEWAY_PORT = 8889


def _xdg(var: str, fallback: str, sub: str) -> Path:
    home = os.environ.get("SAGE_HOME")
    if home:
        return Path(home).expanduser() / sub
    base = os.environ.get(var) or str(Path.home() / fallback)
    return Path(base).expanduser() / APP_NAME


def data_dir() -> Path:
    """Persistent data: vector collections (``$XDG_DATA_HOME/sage``)."""
    return _xdg("XDG_DATA_HOME", ".local/share", "data")


def cache_dir() -> Path:
    """Disposable data: built models, downloaded corpora (``$XDG_CACHE_HOME/sage``)."""
    return _xdg("XDG_CACHE_HOME", ".cache", "cache")


def config_dir() -> Path:
    """User configuration: engine lists, gateway config (``$XDG_CONFIG_HOME/sage``)."""
    return _xdg("XDG_CONFIG_HOME", ".config", "config")


def state_dir() -> Path:
    """Job records, traces and logs (``$XDG_STATE_HOME/sage``)."""
    return _xdg("XDG_STATE_HOME", ".local/state", "state")
