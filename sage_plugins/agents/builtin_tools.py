"""Built-in tools: ``calculator`` (arithmetic parsed, never evaluated as code),
``retrieve`` (top-k documents of a collection) and ``http-get`` (refused unless the
host is allowed by its config)."""

from __future__ import annotations

import ast
import math
import operator as op
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from sage_core.tools import Tool, ToolContract, ToolError, ToolRefused

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: op.add,
    ast.Sub: op.sub,
    ast.Mult: op.mul,
    ast.Div: op.truediv,
    ast.FloorDiv: op.floordiv,
    ast.Mod: op.mod,
    ast.Pow: op.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: op.neg, ast.UAdd: op.pos}
_FUNCS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_CONSTS = {"pi": math.pi, "e": math.e}
_MAX_EXPONENT = 1000


def calculate(expression: str) -> float | int:
    """The value of an arithmetic ``expression`` (numbers, + - * / // % **,
    parentheses, pi, e and sqrt/abs/round/min/max/log/exp/sin/cos/tan).

    Raises:
        ToolError: anything else (names, attributes, calls of other functions,
            huge powers), or a math error such as division by zero.
    """
    if len(expression) > 500:
        raise ToolError("calculator: expression longer than 500 characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ToolError(
            f"calculator: not an arithmetic expression ({exc.msg})"
        ) from None

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.Name) and node.id in _CONSTS:
            return _CONSTS[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
                raise ToolError(f"calculator: exponent above {_MAX_EXPONENT}")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
        ):
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise ToolError(
            f"calculator: {type(node).__name__} is not allowed; use numbers, "
            f"operators, pi, e and {', '.join(sorted(_FUNCS))}"
        )

    try:
        return ev(tree)  # type: ignore[no-any-return]
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ToolError(f"calculator: {exc}") from None


CALCULATOR = Tool(
    name="calculator",
    description="Evaluate an arithmetic expression, e.g. '2 * (3 + 4) / sqrt(16)'.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
        "additionalProperties": False,
    },
    fn=calculate,
    contract=ToolContract(timeout_s=2.0),
    examples=("what is 17 percent of 240", "add up these numbers", "square root of 2"),
)


def make_http_get(
    *, allow_hosts: Sequence[str] = (), max_bytes: int = 20_000, timeout_s: float = 10.0
) -> Tool:
    """``http-get``: fetch a URL whose host is in ``allow_hosts`` (none by default,
    so every call is refused until the config allows a host)."""
    allowed = {h.lower() for h in allow_hosts}

    def get(url: str) -> dict[str, Any]:
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or host not in allowed:
            raise ToolRefused(
                f"http-get: {host or url!r} is not allowed; allowed hosts: "
                f"{sorted(allowed) or 'none'} (tool config allow_hosts)"
            )
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                body = resp.read(max_bytes)
                return {"status": resp.status, "text": body.decode("utf-8", "replace")}
        except OSError as exc:
            raise ToolError(f"http-get: {exc}") from None

    return Tool(
        name="http-get",
        description="Fetch a web page or API by URL (only hosts allowed by config).",
        parameters={
            "type": "object",
            "properties": {"url": {"type": "string"}},
            "required": ["url"],
        },
        fn=get,
        contract=ToolContract(network=True, timeout_s=timeout_s),
        examples=("download this page", "call the REST endpoint", "read a website"),
    )


def make_retrieve(
    *,
    collection: str,
    embedder: str = "sentence-transformers",
    embedder_config: dict[str, Any] | None = None,
    root: str | None = None,
    top_k: int = 5,
) -> Tool:
    """``retrieve``: the top documents of ``collection`` for a query."""
    from sage_core.backends import create_embedding_backend
    from sage_plugins.rag.collection import Collection

    coll = Collection(collection, root)
    backend = create_embedding_backend(embedder, **(embedder_config or {}))

    def retrieve(query: str, k: int = top_k) -> list[dict[str, Any]]:
        hits = coll.search(backend.embed([query]), max(1, min(int(k), 20)))[0]
        return [{"text": h["text"], "score": round(h["score"], 4)} for h in hits]

    return Tool(
        name="retrieve",
        description=f"Search the {collection!r} document collection for passages "
        f"relevant to a query.",
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
            "required": ["query"],
        },
        fn=retrieve,
        examples=("find documents about a topic", "look it up in our docs"),
    )
