"""Emulated tool calling: how an emulated LLM engine answers a request that offers
``tools`` (plumbing for agent loops, not a model of which tool a real model picks).

The rule is deterministic, so a run through an agent is reproducible:

* while the conversation holds fewer tool results than the engine's
  ``tool_rounds`` (default 1) and ``tool_choice`` is not ``"none"``, the reply is one
  tool call: the tool named by ``tool_choice``, else the first offered tool whose
  name appears in the last user message, else the first offered tool;
* its arguments are filled from the tool's JSON schema: every required string gets
  the last user message, numbers 1, booleans false, an ``enum`` its first value,
  arrays ``[]`` and objects ``{}`` (so ``calculator`` asked ``"17 * 23"`` computes it);
* otherwise the engine answers with text, as it does without tools.

The call's arguments are what the engine decodes: their token count (at least one)
is the generation length the device timeline charges.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

_FILL = {"number": 1, "integer": 1, "boolean": False, "array": [], "object": {}}


def _last_user(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


def _functions(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise TypeError("'tools' must be a list")
    out = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise TypeError("every tool needs a 'function' with a 'name'")
        out.append(fn)
    return out


def _arguments(fn: dict[str, Any], text: str) -> dict[str, Any]:
    schema = fn.get("parameters") or {}
    props = schema.get("properties") or {}
    args: dict[str, Any] = {}
    for name in schema.get("required") or []:
        prop = props.get(name) or {}
        if prop.get("enum"):
            args[name] = prop["enum"][0]
        else:
            args[name] = _FILL.get(str(prop.get("type", "string")), text)
    return args


def tool_call(body: dict[str, Any], rounds: int) -> dict[str, Any] | None:
    """The tool call an emulated engine replies with (an OpenAI ``tool_calls`` entry),
    or None when it answers with text.

    Raises:
        TypeError: malformed ``tools``.
    """
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    messages = body.get("messages") or []
    done = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "tool")
    if done >= rounds:
        return None
    fns = _functions(tools)
    text = _last_user(messages)
    forced = (
        choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    )
    fn = next((f for f in fns if f["name"] == forced), None) or next(
        (f for f in fns if f["name"].lower() in text.lower()), fns[0]
    )
    return {
        "id": f"call_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {
            "name": fn["name"],
            "arguments": json.dumps(_arguments(fn, text)),
        },
    }
