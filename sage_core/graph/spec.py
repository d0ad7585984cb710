"""The declarative YAML/JSON pipeline spec: the same logical graph as the DSL.

```yaml
name: word-stats
settings: {buffer_size: 64, queue_capacity: 64}   # runtime settings (optional)
operators:
  - name: read
    use: text-lines                 # plugin name, or "package.module:attr"
    config: {path: input.txt}       # relative to this file's directory
  - name: stats
    use: text-stats
    parallelism: 2
    contract: {batch_size: 8}
    inputs: [read]                  # shorthand for edges into this operator
  - name: out
    use: collect
    inputs: [{from: stats, router: key-hash, key: words}]
edges:                              # explicit edges (optional)
  - {from: a, to: b, input: 0, router: round-robin, key: field_or_pkg.mod:fn}
```

``role`` may be omitted when the implementation declares it (Function classes and
plugins registered with ``role=``). Every problem is reported at once with its path.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sage_core import plugins
from sage_core.common.errors import SageError
from sage_core.functions import ByRole
from sage_core.graph.model import (
    ON_ERROR,
    ROLES,
    Edge,
    GraphError,
    LogicalGraph,
    Node,
    OperatorRef,
    Problem,
)
from sage_core.graph.refs import (
    for_role,
    key_spec,
    load_operator,
    load_path,
    plugin_entry_role,
)

_TOP = {"name", "settings", "operators", "edges"}
_OP = {
    "name",
    "use",
    "role",
    "config",
    "parallelism",
    "contract",
    "on_error",
    "restart",
    "inputs",
    "window",
    "window_s",
}
_EDGE = {"from", "to", "input", "router", "router_config", "key", "feedback"}


class SpecError(GraphError):
    """A pipeline spec file is malformed (every problem, with its path)."""


@dataclass(slots=True)
class PipelineSpec:
    """A loaded spec: the logical graph and the runtime settings it asks for."""

    graph: LogicalGraph
    settings: dict[str, Any] = field(default_factory=dict)


def read_spec_file(path: str | Path) -> Mapping[str, Any]:
    """Parse a ``.yaml``/``.yml``/``.json`` file into a mapping.

    Raises:
        SpecError: the file is missing, unreadable or not a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([Problem(str(p), f"cannot read: {exc.strerror}")]) from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError([Problem(str(p), f"not valid YAML/JSON: {exc}")]) from None
    if not isinstance(data, Mapping):
        raise SpecError([Problem(str(p), "the top level must be a mapping")])
    return data


def _role_of(use: str) -> str | None:
    try:
        if ":" in use:
            obj = load_path(use)
            role = getattr(obj, "role", None)
            return role if isinstance(role, str) and role in ROLES else None
        return plugin_entry_role(use)
    except SageError:
        return None  # reported by validation with close matches


def _resolves(use: str) -> bool:
    """Whether ``use`` names an existing plugin or importable attribute."""
    try:
        if ":" in use:
            load_path(use)
        else:
            plugins.get("operator", use)
    except SageError:
        return False
    return True


def _variants(use: str) -> tuple[str, ...]:
    """Roles of a ByRole plugin (empty for anything else)."""
    if ":" in use:
        return ()
    try:
        obj = plugins.get("operator", use)
    except SageError:
        return ()
    return obj.roles if isinstance(obj, ByRole) else ()


def _edge(raw: Any, where: str, out: list[Problem], dst: str | None) -> Edge | None:
    if isinstance(raw, str) and dst is not None:
        return Edge(src=raw, dst=dst)
    if not isinstance(raw, Mapping):
        out.append(
            Problem(where, f"an edge is a mapping (or an operator name), got {raw!r}")
        )
        return None
    for extra in sorted(set(raw) - _EDGE):
        out.append(
            Problem(
                f"{where}.{extra}", f"unknown field; known: {', '.join(sorted(_EDGE))}"
            )
        )
    src = raw.get("from")
    to = raw.get("to", dst)
    if not isinstance(src, str) or not isinstance(to, str):
        out.append(Problem(where, "an edge needs 'from' and 'to' operator names"))
        return None
    index = raw.get("input", 0)
    if isinstance(index, bool) or not isinstance(index, int) or index not in (0, 1):
        out.append(Problem(f"{where}.input", f"must be 0 or 1, got {index!r}"))
        index = 0
    router = raw.get("router")
    if router is not None and not isinstance(router, str):
        out.append(Problem(f"{where}.router", f"must be a router name, got {router!r}"))
        router = None
    rcfg = raw.get("router_config", {}) or {}
    if not isinstance(rcfg, Mapping):
        out.append(Problem(f"{where}.router_config", "must be a mapping"))
        rcfg = {}
    key = raw.get("key")
    if key is not None and not isinstance(key, str):
        out.append(
            Problem(
                f"{where}.key", f"must be a field name or 'pkg.mod:fn', got {key!r}"
            )
        )
        key = None
    return Edge(
        src=src,
        dst=to,
        input_index=index,
        router=router,
        router_config=dict(rcfg),
        key=key_spec(key) if key else None,
        feedback=bool(raw.get("feedback", False)),
    )


def _resolve_paths(graph: LogicalGraph, base: Path) -> None:
    """Make the relative file paths in operator configs relative to ``base`` (the
    config keys an operator class lists in ``path_config``)."""
    for node in graph.nodes.values():
        try:
            impl = for_role(load_operator(node.ref), node.role)
        except (SageError, LookupError):
            continue  # reported by validation
        keys = getattr(impl, "path_config", ()) if inspect.isclass(impl) else ()
        for key in keys:
            value = node.config.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                node.config[key] = str(base / value)


def load_spec(
    data: Mapping[str, Any] | str | Path, *, base_dir: str | Path | None = None
) -> PipelineSpec:
    """Build the logical graph a spec describes (a mapping, or a file path).

    Relative file paths in operator configs (the keys an operator lists in
    ``path_config``, such as ``path`` of ``text-lines``) are taken from the spec
    file's directory, or from ``base_dir`` for a mapping (default: left as given,
    i.e. the current directory).

    Raises:
        SpecError: the spec's structure is wrong (all problems at once). Semantic
            problems (unknown plugins, cycles ...) are found by ``validate``.
    """
    if not isinstance(data, Mapping):
        base_dir = Path(data).resolve().parent
        data = read_spec_file(data)
    out: list[Problem] = []
    for extra in sorted(set(data) - _TOP):
        out.append(
            Problem(extra, f"unknown top-level field; known: {', '.join(sorted(_TOP))}")
        )
    name = data.get("name", "job")
    if not isinstance(name, str) or not name:
        out.append(Problem("name", f"must be a non-empty string, got {name!r}"))
        name = "job"
    settings = data.get("settings", {}) or {}
    if not isinstance(settings, Mapping):
        out.append(Problem("settings", "must be a mapping"))
        settings = {}
    graph = LogicalGraph(name)
    ops = data.get("operators")
    if not isinstance(ops, list) or not ops:
        out.append(Problem("operators", "must be a non-empty list of operators"))
        ops = []
    pending: list[Edge] = []
    undecided: list[tuple[str, Node]] = []
    unknown: list[str] = []
    for i, raw in enumerate(ops):
        where = f"operators[{i}]"
        if not isinstance(raw, Mapping):
            out.append(Problem(where, "an operator is a mapping"))
            continue
        for extra in sorted(set(raw) - _OP):
            out.append(
                Problem(
                    f"{where}.{extra}",
                    f"unknown field; known: {', '.join(sorted(_OP))}",
                )
            )
        op_name = raw.get("name")
        use = raw.get("use")
        if not isinstance(op_name, str) or not op_name:
            out.append(Problem(f"{where}.name", "must be a non-empty string"))
            op_name = f"op{i}"
        where = f"operators[{i}] ({op_name})"
        if not isinstance(use, str) or not use:
            out.append(
                Problem(
                    f"{where}.use", "must name a plugin or a 'pkg.module:attr' path"
                )
            )
            continue
        role = raw.get("role") or _role_of(use)
        multi = role is None and bool(_variants(use))
        if multi:
            role = "map"  # decided once edges are known
        elif role is None and not _resolves(use):
            role = "map"  # the unknown plugin/path is reported by validation
            unknown.append(op_name)
        elif role is None:
            out.append(
                Problem(
                    f"{where}.role",
                    f"{use!r} does not declare its role; add role: (one of {', '.join(ROLES)})",
                )
            )
            role = "map"
        for fld in ("config", "contract"):
            if not isinstance(raw.get(fld, {}) or {}, Mapping):
                out.append(Problem(f"{where}.{fld}", "must be a mapping"))
        on_error = raw.get("on_error", "fail")
        if on_error not in ON_ERROR:
            out.append(
                Problem(f"{where}.on_error", f"must be one of {', '.join(ON_ERROR)}")
            )
        config = raw.get("config", {}) or {}
        contract = raw.get("contract", {}) or {}
        node = graph.add_node(
            Node(
                name=op_name,
                role=str(role),
                ref=OperatorRef("import" if ":" in use else "plugin", use),
                config=dict(config) if isinstance(config, Mapping) else {},
                parallelism=raw.get("parallelism", settings.get("parallelism", 1)),
                contract=dict(contract) if isinstance(contract, Mapping) else {},
                on_error=str(on_error),
                options={
                    k: raw[k] for k in ("window", "window_s", "restart") if k in raw
                },
            )
        )
        if multi:
            undecided.append((where, node))
        inputs = raw.get("inputs", []) or []
        if not isinstance(inputs, list):
            out.append(Problem(f"{where}.inputs", "must be a list"))
            inputs = []
        for j, item in enumerate(inputs):
            edge = _edge(item, f"{where}.inputs[{j}]", out, op_name)
            if edge is not None:
                if isinstance(item, str) or "input" not in item:
                    edge.input_index = j if role in ("co_map", "join") else 0
                pending.append(edge)
    edges = data.get("edges", []) or []
    if not isinstance(edges, list):
        out.append(Problem("edges", "must be a list"))
        edges = []
    for i, raw in enumerate(edges):
        edge = _edge(raw, f"edges[{i}]", out, None)
        if edge is not None:
            pending.append(edge)
    for edge in pending:
        graph.add_edge(edge)
    for name in unknown:  # guess the role from the edges so problems stay focused
        if not any(e.dst == name for e in pending):
            graph.nodes[name].role = "source"
    for where, node in undecided:  # ByRole plugins: a source when nothing feeds it
        fed = any(e.dst == node.name for e in pending)
        roles = _variants(node.ref.name)
        others = [r for r in roles if r != "source"]
        if not fed and "source" in roles:
            node.role = "source"
        elif fed and len(others) == 1:
            node.role = others[0]
        else:
            out.append(
                Problem(f"{where}.role", f"say which role {node.ref.name!r} plays")
            )
    if out:
        raise SpecError(out, what="pipeline spec")
    if base_dir is not None:
        _resolve_paths(graph, Path(base_dir))
    return PipelineSpec(graph, dict(settings))
