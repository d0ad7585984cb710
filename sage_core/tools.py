"""Tools an agent may call: a name, a description, a JSON schema for the arguments,
a callable and a contract saying what calling it may do.

Plugins register them with the ``register_tools`` hook: the object is a ``Tool``, or a
factory ``make(**config) -> Tool`` for tools that need config (a collection name, the
hosts ``http-get`` may reach). ``check_arguments`` validates a call's arguments
against the schema's ``required`` fields and property ``type``s before the tool runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sage_core.common.errors import SageError


class ToolError(SageError):
    """A tool call failed or was refused; the agent feeds the message back."""


class ToolRefused(ToolError):
    """A tool refused a call its config does not allow (e.g. a host not allowed)."""


@dataclass(frozen=True, slots=True)
class ToolContract:
    """What calling a tool may do.

    Attributes:
        network: reaches the network.
        side_effects: changes something outside the call (writes, sends).
        timeout_s: the longest one call may take.
    """

    network: bool = False
    side_effects: bool = False
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Tool:
    """One callable tool: ``fn(**arguments)`` returns a JSON-friendly result.

    ``examples`` are short usage phrases ("convert 20 dollars to euros") that tool
    retrieval indexes besides the name, description and parameters; the model is not
    shown them.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., Any] = field(compare=False)
    contract: ToolContract = ToolContract()
    examples: tuple[str, ...] = ()

    def spec(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def check_arguments(tool: Tool, arguments: Any) -> dict[str, Any]:
    """``arguments`` if they fit the tool's schema (required fields, property types).

    Raises:
        ToolError: not an object, a missing required field, a wrong type, or an
            unknown field when the schema sets ``additionalProperties: false``.
    """
    if not isinstance(arguments, dict):
        raise ToolError(f"{tool.name}: arguments must be a JSON object")
    props: Mapping[str, Any] = tool.parameters.get("properties", {})
    missing = [k for k in tool.parameters.get("required", ()) if k not in arguments]
    if missing:
        raise ToolError(f"{tool.name}: missing required argument(s) {missing}")
    for key, value in arguments.items():
        if key not in props:
            if tool.parameters.get("additionalProperties", True) is False:
                raise ToolError(f"{tool.name}: unknown argument {key!r}")
            continue
        want = props[key].get("type")
        ok = _TYPES.get(want) if isinstance(want, str) else None
        if ok and (
            not isinstance(value, ok) or (want != "boolean" and isinstance(value, bool))
        ):
            raise ToolError(f"{tool.name}: argument {key!r} must be a {want}")
    return arguments
