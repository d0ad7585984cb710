"""Logical graph validation (every problem at once) and the YAML/JSON spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_core import LocalEnvironment
from sage_core.graph import (
    Edge,
    GraphError,
    LogicalGraph,
    Node,
    OperatorRef,
    SpecError,
    load_spec,
    validate,
)


def _node(name: str, role: str, use: str, **kw: object) -> Node:
    kind = "import" if ":" in use else "plugin"
    return Node(name=name, role=role, ref=OperatorRef(kind, use), **kw)  # type: ignore[arg-type]


def test_every_problem_is_reported_with_its_place() -> None:
    g = LogicalGraph("bad")
    g.add_node(_node("src", "source", "colection"))
    g.add_node(_node("m", "map", "builtins:str.upper", parallelism=0, on_error="retry"))
    g.add_node(_node("out", "sink", "collect", contract={"batch_size": 0}))
    g.add_node(_node("lonely", "map", "builtins:str.lower"))
    g.add_edge(Edge("src", "m"))
    g.add_edge(Edge("m", "out", router="key-hash"))
    g.add_edge(Edge("ghost", "out"))
    where = {p.where: p.message for p in validate(g)}
    assert "Did you mean 'collection'" in where["operator 'src'.operator"]
    assert "integer >= 1" in where["operator 'm'.parallelism"]
    assert "fail, dead-letter" in where["operator 'm'.on_error"]
    assert "batch_size" in where["operator 'out'.contract"]
    assert "needs a key" in where["edge 1 (m -> out).router"]
    assert "no operator named 'ghost'" in where["edge 2 (ghost -> out).from"]
    assert "has no input" in where["operator 'lonely'.inputs"]


def test_cycle_needs_an_explicit_feedback_edge() -> None:
    g = LogicalGraph("loop")
    g.add_node(_node("src", "source", "range", config={"stop": 3}))
    g.add_node(_node("a", "map", "builtins:abs"))
    g.add_node(_node("b", "map", "builtins:abs"))
    g.add_edge(Edge("src", "a"))
    g.add_edge(Edge("a", "b"))
    g.add_edge(Edge("b", "a"))
    messages = [str(p) for p in validate(g)]
    assert any("cycle a -> b -> a" in m and "feedback" in m for m in messages)


def test_role_mismatch_and_two_input_rules() -> None:
    g = LogicalGraph("roles")
    g.add_node(_node("src", "source", "collect"))
    g.add_node(_node("j", "join", "builtins:max"))
    g.add_node(_node("s", "source", "range", config={"stop": 2}))
    g.add_edge(Edge("s", "j"))
    messages = [str(p) for p in validate(g)]
    assert any("is a sink operator, used as a source" in m for m in messages)
    assert any("needs inputs 0 and 1" in m for m in messages)
    assert any("join input from 's' is not keyed" in m for m in messages)


def test_unsatisfiable_contract_names_the_resource() -> None:
    env = LocalEnvironment("gpu", resources={})
    env.from_collection([1]).map(abs, contract={"gpu": 1}).collect()
    with pytest.raises(GraphError, match=r"needs GPU=1 per replica.*offers none"):
        env.compile()


def test_dsl_errors_surface_before_running() -> None:
    env = LocalEnvironment("dsl")
    env.from_collection([1]).map("no-such-operator").sink("colect")
    with pytest.raises(GraphError) as info:
        env.execute()
    text = str(info.value)
    assert "unknown operator 'no-such-operator'" in text
    assert "Did you mean 'collect'" in text


SPEC = """
name: words
settings: {buffer_size: 8}
operators:
  - name: read
    use: text-lines
    config: {path: PATH, skip_empty: true}
    parallelism: 2
  - name: split
    use: "tests.core.test_graph_and_spec:split_words"
    role: flat_map
    inputs: [read]
  - name: out
    use: collect
    inputs: [{from: split, key: "tests.core.test_graph_and_spec:first_letter"}]
    parallelism: 2
"""


def split_words(line: str) -> list[str]:
    return line.split()


def first_letter(word: str) -> str:
    return word[0]


def test_spec_builds_the_same_graph_and_runs(tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("alpha beta\n\ngamma delta epsilon\n")
    spec_file = tmp_path / "p.yaml"
    spec_file.write_text(SPEC.replace("PATH", str(text)))
    spec = load_spec(spec_file)
    assert spec.settings == {"buffer_size": 8}
    assert [n.role for n in spec.graph.nodes.values()] == ["source", "flat_map", "sink"]
    edge = spec.graph.edges[-1]
    assert edge.key is not None and edge.key.kind == "import"
    from sage_core.compiler import compile_plan
    from sage_core.runtime.local import LocalRuntime

    plan = compile_plan(spec.graph)
    result = LocalRuntime().submit(plan).wait(30)
    assert sorted(result.collected("out")) == sorted(
        ["alpha", "beta", "gamma", "delta", "epsilon"]
    )


def test_json_spec_and_byrole_plugin_roles(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"a": 1}\n{"a": 2}\n')
    spec = {
        "operators": [
            {"name": "read", "use": "jsonl", "config": {"path": str(src)}},
            {
                "name": "write",
                "use": "jsonl",
                "config": {"path": str(tmp_path / "o.jsonl")},
                "inputs": ["read"],
            },
        ]
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(spec))
    graph = load_spec(path).graph
    assert [graph.nodes["read"].role, graph.nodes["write"].role] == ["source", "sink"]


def test_spec_structure_errors_are_all_listed(tmp_path: Path) -> None:
    bad = {
        "nme": "x",
        "operators": [
            {"use": "collect", "colour": "red"},
            {"name": "b", "use": 3, "config": [1]},
            {"name": "c", "use": "collect", "inputs": [{"from": "a", "input": 5}]},
        ],
        "edges": "nope",
    }
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    where = [p.where for p in info.value.problems]
    assert "nme" in where
    assert "operators[0].name" in where and "operators[0].colour" in where
    assert any(w.startswith("operators[1] (b).use") for w in where)
    assert any(w.endswith("inputs[0].input") for w in where)
    assert "edges" in where


def test_unreadable_and_malformed_spec_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("operators: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML/JSON"):
        load_spec(broken)


def test_relative_paths_in_a_spec_file_are_taken_from_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    spec = {
        "operators": [
            {"name": "read", "use": "jsonl", "config": {"path": "data/in.jsonl"}},
            {"name": "lines", "use": "text-lines", "config": {"path": "/abs/x.txt"}},
            {
                "name": "write",
                "use": "jsonl",
                "config": {"path": "out.jsonl"},
                "inputs": ["read"],
            },
            {"name": "m", "use": "no-such-op", "config": {"path": "p"}},
        ]
    }
    (specs / "p.json").write_text(json.dumps(spec))
    monkeypatch.chdir(tmp_path)  # somewhere else than the spec's directory
    nodes = load_spec(Path("specs/p.json")).graph.nodes
    assert nodes["read"].config["path"] == str(specs / "data" / "in.jsonl")
    assert nodes["write"].config["path"] == str(specs / "out.jsonl")
    assert nodes["lines"].config["path"] == "/abs/x.txt"
    assert nodes["m"].config["path"] == "p"  # unknown operator: left to validation
    as_mapping = load_spec(spec).graph.nodes
    assert as_mapping["read"].config["path"] == "data/in.jsonl"
    based = load_spec(spec, base_dir=specs).graph.nodes
    assert based["read"].config["path"] == str(specs / "data" / "in.jsonl")
