"""Named errors for every user mistake SAGE can detect.

Each error says what was wrong and what to do next. ``SageError`` is the common base so
callers can catch everything SAGE raises on purpose with one clause.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SageError(Exception):
    """Base class of every error SAGE raises on purpose."""


class ClusterSecurityError(SageError):
    """A cluster connection lacks what its security needs (e.g. TLS credentials)."""


class PluginError(SageError):
    """A plugin could not be loaded or registered."""


class PluginConflict(PluginError):
    """Two plugins registered the same name in the same family."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind = kind
        self.name = name
        self.first = first
        self.second = second
        super().__init__(
            f"{kind} {name!r} is registered twice: by {first} and by {second}. "
            f"Uninstall one of them, or disable one with SAGE_PLUGINS=... "
            f"(see `sage plugins --kind {kind}`)."
        )


class UnknownPluginError(SageError, KeyError):
    """A name was looked up in a plugin family that has no such entry."""

    def __init__(self, kind: str, name: str, available: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        self.matches = close_matches(name, self.available)
        hint = (
            f" Did you mean {', '.join(repr(m) for m in self.matches)}?"
            if self.matches
            else ""
        )
        listing = ", ".join(self.available) if self.available else "none installed"
        super().__init__(f"unknown {kind} {name!r}.{hint} Available: {listing}.")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` candidates that look like ``name`` (for "did you mean")."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
