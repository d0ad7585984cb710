"""Emulated tool calling: the rule of ``tools.py`` and the agent operator running its
loop against ``sage engine emulate`` as a real process."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from sage_core import LocalEnvironment
from sage_plugins.emulator.tools import tool_call

CONFIG = {
    "profile": "cpu-2core-tiny-llama-minilm",
    "time_scale": 0.05,
    "devices": [
        {
            "name": "gpu0",
            "engines": [
                {"id": "llm0", "kind": "llm", "model": "llama", "tool_rounds": 2}
            ],
        }
    ],
}


def _spec(name: str, **props: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {
                "type": "object",
                "properties": props,
                "required": list(props),
            },
        },
    }


TOOLS = [
    _spec("lookup", key={"type": "string"}, limit={"type": "integer"}),
    _spec("calculator", expression={"type": "string"}),
    _spec("units", unit={"type": "string", "enum": ["km", "mi"]}),
]


def _body(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "tools": TOOLS, **extra}


def test_the_named_tool_is_called_with_arguments_from_its_schema() -> None:
    call = tool_call(_body("calculator 2 + 2"), rounds=1)
    assert call is not None and call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {
        "expression": "calculator 2 + 2"
    }
    first = tool_call(_body("no tool named here"), rounds=1)
    assert first is not None
    assert json.loads(first["function"]["arguments"]) == {
        "key": "no tool named here",
        "limit": 1,
    }
    forced = tool_call(
        _body("x", tool_choice={"type": "function", "function": {"name": "units"}}), 1
    )
    assert forced is not None
    assert json.loads(forced["function"]["arguments"]) == {"unit": "km"}


def test_the_engine_answers_in_text_once_its_rounds_are_done_or_tools_are_off() -> None:
    body = _body("calculator 1")
    body["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "c", "content": "1"},
    ]
    assert tool_call(body, rounds=1) is None
    assert tool_call(body, rounds=2) is not None
    assert tool_call(_body("x", tool_choice="none"), rounds=1) is None
    assert tool_call({"messages": [{"role": "user", "content": "x"}]}, 1) is None
    with pytest.raises(TypeError, match="'function'"):
        tool_call({"messages": [], "tools": [{"type": "function"}]}, 1)


def test_openai_client_sees_tool_calls_streamed_and_not(emulator: Any) -> None:
    url = emulator(CONFIG)["engines"][0]["url"]
    client = openai.OpenAI(base_url=url + "/v1", api_key="x")
    messages: Any = [{"role": "user", "content": "calculator 6 * 7"}]
    out = client.chat.completions.create(model="llama", messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.name == "calculator"  # type: ignore[union-attr]
    stream = client.chat.completions.create(
        model="llama",
        messages=messages,
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
    )
    chunks = [c for c in stream if c.choices]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    deltas = chunks[-1].choices[0].delta.tool_calls
    assert deltas is not None and deltas[0].function is not None
    assert deltas[0].function.name == "calculator"
    bad = httpx.post(
        url + "/v1/chat/completions",
        json={"messages": messages, "tools": [{"type": "function"}]},
    )
    assert bad.status_code == 400 and "'function'" in bad.json()["error"]["message"]


def test_agent_loop_runs_its_tool_rounds_against_the_emulator(emulator: Any) -> None:
    url = emulator(CONFIG)["engines"][0]["url"]
    env = LocalEnvironment("agent-emulated")
    env.from_collection([{"query": f"{i} * 3"} for i in range(6)]).map(
        "agent",
        base_url=url + "/v1",
        model="llama",
        tools=["calculator"],
        parallelism=3,
    ).collect(name="out")
    out = env.execute(timeout=60).collected("out")
    assert sorted(x["query"] for x in out) == [f"{i} * 3" for i in range(6)]
    for x in out:
        trace = x["agent"]
        assert trace["stopped"] == "answer"
        assert len(trace["steps"]) == 3  # two tool rounds, then the answer
        results = [s["calls"][0]["result"] for s in trace["steps"][:2]]
        assert results == [int(x["query"].split()[0]) * 3] * 2
