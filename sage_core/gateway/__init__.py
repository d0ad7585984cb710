"""The OpenAI-compatible HTTP gateway over the LLM control plane (``sage gateway``)."""

from __future__ import annotations

from sage_core.gateway.app import create_app

__all__ = ["create_app"]
