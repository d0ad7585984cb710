"""Agents and tools: the ``agent`` operator (OpenAI tool-calling loop), tool
retrieval for large catalogs, and the built-in tools ``calculator``, ``retrieve`` and
``http-get``."""

from __future__ import annotations

from typing import Any

from sage_core import hookimpl
from sage_plugins.agents.agent import Agent
from sage_plugins.agents.builtin_tools import CALCULATOR, make_http_get, make_retrieve
from sage_plugins.agents.tool_index import ToolIndex

__all__ = ["Agent", "ToolIndex"]


@hookimpl
def register_operators(register: Any) -> None:
    """The agent operator."""
    register("agent", Agent, role="map", description=Agent.__doc__)


@hookimpl
def register_tools(register: Any) -> None:
    """The built-in tools (``retrieve`` and ``http-get`` take config)."""
    register("calculator", CALCULATOR, description=CALCULATOR.description)
    register("retrieve", make_retrieve, description="top-k passages of a collection")
    register("http-get", make_http_get, description="GET a URL of an allowed host")
