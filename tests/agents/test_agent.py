"""The agent loop against the OpenAI test double, built-in tools, tool retrieval."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core import LocalEnvironment, plugins
from sage_core.tools import Tool, ToolError, ToolRefused, check_arguments
from sage_plugins.agents import Agent, ToolIndex
from sage_plugins.agents.builtin_tools import CALCULATOR, calculate, make_http_get


def run_agent(base_url: str, queries: list[str], **config: Any) -> list[dict[str, Any]]:
    env = LocalEnvironment("agent")
    env.from_collection([{"query": q} for q in queries]).map(
        "agent", base_url=base_url, model="double", **config
    ).collect(name="out")
    out = env.execute(timeout=60).collected("out")
    by_query = {x["query"]: x["agent"] for x in out}
    return [by_query[q] for q in queries]


def test_tool_call_result_goes_back_to_the_model_and_the_trace_shows_it(
    openai_double: Any,
) -> None:
    (res,) = run_agent(
        openai_double.base_url, ["calc: 2 * (3 + 4)"], tools=["calculator"]
    )
    assert res["stopped"] == "answer"
    assert res["answer"] == 'done: {"result": 14}'
    call = res["steps"][0]["calls"][0]
    assert call["tool"] == "calculator" and call["result"] == 14
    assert len(res["steps"]) == 2
    offered = openai_double.requests[0]["tools"]
    assert [t["function"]["name"] for t in offered] == ["calculator"]
    assert openai_double.requests[1]["messages"][-1]["role"] == "tool"


def test_tool_errors_are_fed_back_not_raised(openai_double: Any) -> None:
    bad, refused, div0 = run_agent(
        openai_double.base_url,
        ["bad args", "fetch: http://example.invalid/x", "calc: 1/0"],
        tools=["calculator", "http-get"],
    )
    assert "missing required argument" in bad["steps"][0]["calls"][0]["error"]
    assert json.loads(bad["answer"][6:])["error"].startswith("calculator")
    assert "not allowed" in refused["steps"][0]["calls"][0]["error"]
    assert "division by zero" in div0["steps"][0]["calls"][0]["error"]


def test_max_steps_and_model_timeouts_end_the_loop(openai_double: Any) -> None:
    loop, slow = run_agent(
        openai_double.base_url,
        ["loop", "slow"],
        tools=["calculator"],
        max_steps=3,
        step_timeout_s=1,
    )
    assert loop["stopped"] == "max_steps" and len(loop["steps"]) == 3
    assert slow["stopped"] == "model_error" and "timed out" in slow["steps"][0]["error"]


def test_large_catalogs_offer_only_the_top_k_tools(openai_double: Any) -> None:
    (res,) = run_agent(
        openai_double.base_url,
        ["calc: 1 + 1"],
        top_k_tools=1,
        tool_retrieval="bm25",
        tools=["calculator", "http-get"],
    )
    assert res["tools_offered"] == ["calculator"]


@given(a=st.integers(-1000, 1000), b=st.integers(1, 1000), c=st.floats(-50, 50))
def test_calculator_matches_python_arithmetic(a: int, b: int, c: float) -> None:
    assert calculate(f"{a} * {b} - ({c}) / {b}") == pytest.approx(a * b - c / b)
    assert calculate(f"sqrt({b}) + abs({a}) + pi") == pytest.approx(
        math.sqrt(b) + abs(a) + math.pi
    )


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "(1).__class__",
        "open('x')",
        "9 ** 99999",
        "[1, 2]",
        "a + 1",
        "lambda: 1",
    ],
)
def test_calculator_never_evaluates_code(expr: str) -> None:
    with pytest.raises(ToolError, match="calculator"):
        calculate(expr)


def test_http_get_is_refused_unless_the_host_is_allowed() -> None:
    with pytest.raises(ToolRefused, match="none"):
        make_http_get().fn(url="http://127.0.0.1:1/")
    with pytest.raises(ToolRefused, match="file"):
        make_http_get(allow_hosts=["127.0.0.1"]).fn(url="file:///etc/passwd")


def test_tools_are_plugins_and_arguments_are_checked() -> None:
    reg = plugins.registry("tool")
    assert {"calculator", "http-get", "retrieve"} <= {e.name for e in reg.entries()}
    assert isinstance(reg["calculator"].obj, Tool)
    with pytest.raises(ToolError, match="must be a string"):
        check_arguments(CALCULATOR, {"expression": 3})
    with pytest.raises(ToolError, match="unknown argument"):
        check_arguments(CALCULATOR, {"expression": "1", "x": 1})


def test_tool_index_ranks_the_described_tool_first() -> None:
    from sage_core.backends import create_embedding_backend

    names = ["get-weather", "send-email", "convert-currency"]
    descs = [
        "Forecast of rain and temperature for a city",
        "Send an email message to a contact",
        "Convert an amount of money between currencies",
    ]
    idx = ToolIndex(names, descs, create_embedding_backend("hash"))
    for method in ("bm25", "embedding", "fusion"):
        assert idx.top("will it rain in Paris tomorrow temperature", 1, method) == [
            "get-weather"
        ]
    with pytest.raises(ToolError, match="one of"):
        idx.rank(["x"], "magic")


def test_bad_agent_config_is_a_named_error() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        Agent(base_url="http://x", model="m", max_steps=0)


def test_sage_plugins_lists_the_tools() -> None:
    from click.testing import CliRunner

    from sage_core.cli import cli

    got = CliRunner().invoke(cli, ["plugins", "--kind", "tool"])
    assert got.exit_code == 0, got.output
    names = {row["name"] for row in json.loads(got.output)}
    assert {"calculator", "http-get", "retrieve"} <= names
