"""The ``agent`` operator: the OpenAI tool-calling loop against any OpenAI-compatible
server (``POST {base_url}/chat/completions`` with ``tools``).

Per item: the user message is the item's ``field``; each step asks the model, runs the
tool calls it returns (arguments checked against the tool's schema, each call bounded
by its contract's timeout) and feeds back every result, or the error as
``{"error": ...}``, as a ``tool`` message; it ends when the model answers without
tool calls, or after ``max_steps``. With ``top_k_tools`` only the tools ranked best for
the query by :class:`ToolIndex` are offered. The item gets ``out`` (``"agent"``):
``{"answer", "stopped": "answer"|"max_steps"|"model_error", "steps": [...],
"tools_offered": [...], "seconds"}`` (``seconds``: the whole loop); each step records
the model's latency and every tool call's name, arguments, result or error and
duration.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from sage_core import plugins
from sage_core.backends import create_embedding_backend
from sage_core.functions import MapFunction, OperatorContext
from sage_core.tools import Tool, ToolError, check_arguments
from sage_plugins.agents.tool_index import LEXICAL_WEIGHT, ToolIndex
from sage_plugins.rag.common import field_of


def build_tools(names: list[str] | None, tool_config: dict[str, Any]) -> list[Tool]:
    """The registered tools ``names`` (all when None), factories built with their
    ``tool_config[name]``; tools whose factory needs config they lack are left out
    of "all" but are an error when named."""
    reg = plugins.registry("tool")
    wanted = names if names is not None else sorted(e.name for e in reg.entries())
    tools = []
    for name in wanted:
        obj = reg[name].obj
        if isinstance(obj, Tool):
            tools.append(obj)
            continue
        try:
            tools.append(obj(**tool_config.get(name, {})))
        except TypeError as exc:
            if names is not None:
                raise ToolError(f"tool {name!r} needs config: {exc}") from None
    return tools


class Agent(MapFunction):
    """Runs the OpenAI tool-calling loop per item (see module doc).

    Config: ``base_url``, ``model``, ``api_key``, ``tools`` (names; default all
    registered that need no config), ``tool_config`` ({name: config}),
    ``max_steps`` (6), ``step_timeout_s`` (60, one model call), ``system``,
    ``field`` ("query"), ``out`` ("agent"), ``top_k_tools`` (offer only the best k),
    ``tool_retrieval`` ("fusion", "views", "embedding" or "bm25"; "views" is the
    most accurate with ``embedder="sentence-transformers"``), ``embedder`` ("hash"),
    ``lexical_weight`` (BM25's share of the fusion, see :class:`ToolIndex`).
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        tools: list[str] | None = None,
        tool_config: dict[str, Any] | None = None,
        max_steps: int = 6,
        step_timeout_s: float = 60.0,
        system: str | None = None,
        field: str = "query",
        out: str = "agent",
        top_k_tools: int | None = None,
        tool_retrieval: str = "fusion",
        embedder: str = "hash",
        lexical_weight: float = LEXICAL_WEIGHT,
    ) -> None:
        super().__init__(base_url=base_url, model=model)
        if max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key = model, api_key
        self.tool_names, self.tool_config = tools, dict(tool_config or {})
        self.max_steps, self.step_timeout_s = max_steps, step_timeout_s
        self.system, self.field, self.out = system, field, out
        self.top_k, self.method, self.embedder = top_k_tools, tool_retrieval, embedder
        if not 0.0 <= lexical_weight <= 1.0:
            raise ValueError("lexical_weight must be in [0, 1]")
        self.lexical_weight = lexical_weight
        self.tools: dict[str, Tool] = {}
        self.index: ToolIndex | None = None
        self.pool: ThreadPoolExecutor | None = None

    def open(self, context: OperatorContext) -> None:
        self.tools = {t.name: t for t in build_tools(self.tool_names, self.tool_config)}
        if self.top_k is not None:
            emb = (
                None
                if self.method == "bm25"
                else create_embedding_backend(self.embedder)
            )
            self.index = ToolIndex.from_tools(
                list(self.tools.values()), emb, lexical_weight=self.lexical_weight
            )
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="agent-tool")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _ask(
        self, messages: list[dict[str, Any]], specs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if specs:
            body["tools"] = specs
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=self.step_timeout_s) as resp:
            reply = json.loads(resp.read())
        return reply["choices"][0]["message"]  # type: ignore[no-any-return]

    def _call(self, name: str, raw_args: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        record: dict[str, Any] = {"tool": name, "arguments": raw_args}
        try:
            tool = self.tools.get(name)
            if tool is None:
                raise ToolError(f"no tool {name!r}; offered: {sorted(self.tools)}")
            try:
                args = json.loads(raw_args or "{}")
            except ValueError:
                raise ToolError(f"{name}: arguments are not valid JSON") from None
            check_arguments(tool, args)
            assert self.pool is not None
            future = self.pool.submit(tool.fn, **args)
            try:
                record["result"] = future.result(timeout=tool.contract.timeout_s)
            except FutureTimeout:
                raise ToolError(
                    f"{name}: no result within {tool.contract.timeout_s} s"
                ) from None
            except ToolError:
                raise
            except Exception as exc:  # noqa: BLE001 - a tool's failure goes to the model
                raise ToolError(f"{name}: {type(exc).__name__}: {exc}") from None
        except ToolError as exc:
            record["error"] = str(exc)
        record["seconds"] = time.perf_counter() - t0
        return record

    def map(self, item: Any) -> Any:
        start = time.perf_counter()
        query = str(field_of(item, self.field, "agent"))
        offered = (
            self.index.top(query, self.top_k, self.method)
            if self.index is not None and self.top_k is not None
            else list(self.tools)
        )
        specs = [self.tools[n].spec() for n in offered]
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": query})
        steps: list[dict[str, Any]] = []
        answer, stopped = None, "max_steps"
        for _ in range(self.max_steps):
            t0 = time.perf_counter()
            try:
                reply = self._ask(messages, specs)
            except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
                steps.append({"model_s": time.perf_counter() - t0, "error": str(exc)})
                stopped = "model_error"
                break
            step: dict[str, Any] = {"model_s": time.perf_counter() - t0, "calls": []}
            steps.append(step)
            calls = reply.get("tool_calls") or []
            if not calls:
                answer, stopped = reply.get("content"), "answer"
                break
            messages.append(
                {
                    "role": "assistant",
                    "content": reply.get("content"),
                    "tool_calls": calls,
                }
            )
            for call in calls:
                fn = call.get("function", {})
                record = self._call(str(fn.get("name")), fn.get("arguments") or "{}")
                step["calls"].append(record)
                content = (
                    {"error": record["error"]}
                    if "error" in record
                    else {"result": record["result"]}
                )
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.get("id"),
                        "content": json.dumps(content, default=str),
                    }
                )
        return {
            **item,
            self.out: {
                "answer": answer,
                "stopped": stopped,
                "steps": steps,
                "tools_offered": offered,
                "seconds": time.perf_counter() - start,
            },
        }
