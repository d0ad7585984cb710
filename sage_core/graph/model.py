"""The logical graph: operators (nodes) joined by typed edges.

A node names its operator by reference — a plugin name, an importable dotted path
(``"pkg.mod:fn"``) or an inline Python object (a lambda, a local class) — plus its
config, parallelism, contract overrides and error policy. An edge carries the routing
of items between two operators: a router name (``None``: the compiler's default), an
optional key (``key_by``) and the input index of the downstream operator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from sage_core.common.errors import SageError

RefKind = Literal["plugin", "import", "inline"]
KeyKind = Literal["field", "import", "inline"]

#: operator roles, in the order a pipeline usually uses them
ROLES = ("source", "map", "filter", "flat_map", "co_map", "join", "sink")
#: roles that read two inputs (input index 0 and 1)
TWO_INPUT_ROLES = ("co_map", "join")
ON_ERROR = ("fail", "dead-letter")


@dataclass(frozen=True, slots=True)
class OperatorRef:
    """How an operator's implementation is found.

    Attributes:
        kind: ``"plugin"`` (``name`` is a registered operator), ``"import"``
            (``name`` is ``"pkg.module:attr"``) or ``"inline"`` (``obj`` is the object
            itself; ``name`` only describes it).
        name: the plugin name, dotted path, or a description of the inline object.
        obj: the inline object (not compared; travels pickled in plan JSON).
    """

    kind: RefKind
    name: str
    obj: Any = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        return self.name if self.kind != "inline" else f"<inline {self.name}>"


@dataclass(frozen=True, slots=True)
class KeySpec:
    """How the key of an item is computed on a keyed edge.

    ``"field"``: ``item[name]``; ``"import"``: the callable at ``name``
    (``"pkg.mod:fn"``); ``"inline"``: ``obj(item)``.
    """

    kind: KeyKind
    name: str
    obj: Any = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class Node:
    """One logical operator.

    Attributes:
        name: unique name in the graph (replica ids are ``name#index``).
        role: one of ``ROLES``.
        ref: where the implementation comes from.
        config: keyword arguments of the operator.
        parallelism: number of replicas (>= 1).
        contract: overrides of the implementation's declared Contract fields.
        on_error: ``"fail"`` (the job fails) or ``"dead-letter"`` (the item and its
            traceback go to the job's dead-letter sink).
        options: runtime options of the role (join ``window``/``window_s``).
    """

    name: str
    role: str
    ref: OperatorRef
    config: dict[str, Any] = field(default_factory=dict)
    parallelism: Any = 1
    contract: dict[str, Any] = field(default_factory=dict)
    on_error: str = "fail"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Edge:
    """Items of ``src`` flow to input ``input_index`` of ``dst``.

    Attributes:
        router: router plugin name; ``None`` lets the compiler choose (``key-hash``
            on keyed edges, a one-to-one forward link when parallelisms match,
            else ``round-robin``).
        router_config: keyword arguments of the router.
        key: the key function of a keyed edge (``key_by``).
        feedback: marks the edge closing a cycle on purpose.
    """

    src: str
    dst: str
    input_index: int = 0
    router: str | None = None
    router_config: dict[str, Any] = field(default_factory=dict)
    key: KeySpec | None = None
    feedback: bool = False


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a graph or spec: where, and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class GraphError(SageError, ValueError):
    """A pipeline is invalid; ``problems`` lists every issue found, with its place."""

    def __init__(self, problems: list[Problem], what: str = "pipeline") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(
            f"invalid {what}: {count} problem{'s' if count != 1 else ''}\n{lines}"
        )


class LogicalGraph:
    """Operators and edges, in insertion order (what the DSL and specs build)."""

    def __init__(self, name: str = "job") -> None:
        self.name = name
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        #: duplicate node names seen while building (reported by validation)
        self.duplicates: list[str] = []

    def add_node(self, node: Node) -> Node:
        """Add ``node``; a taken name is recorded as a problem for validation."""
        if node.name in self.nodes:
            self.duplicates.append(node.name)
        else:
            self.nodes[node.name] = node
        return node

    def add_edge(self, edge: Edge) -> Edge:
        self.edges.append(edge)
        return edge

    def unique_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``... whichever is free."""
        if base not in self.nodes:
            return base
        n = 2
        while f"{base}-{n}" in self.nodes:
            n += 1
        return f"{base}-{n}"

    def inputs(self, name: str) -> list[Edge]:
        """Edges into ``name``, in insertion order."""
        return [e for e in self.edges if e.dst == name]

    def outputs(self, name: str) -> list[Edge]:
        """Edges out of ``name``, in insertion order."""
        return [e for e in self.edges if e.src == name]

    def sources(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.role == "source"]

    def topological(self) -> list[str]:
        """Node names so that every non-feedback edge points forward.

        Raises:
            GraphError: the graph has a cycle of non-feedback edges.
        """
        cycle = self.find_cycle()
        if cycle:
            raise GraphError([Problem("edges", _cycle_message(cycle))])
        indegree = {name: 0 for name in self.nodes}
        for e in self._forward_edges():
            indegree[e.dst] += 1
        order: list[str] = []
        ready = [n for n, d in indegree.items() if d == 0]
        while ready:
            name = ready.pop(0)
            order.append(name)
            for e in self._forward_edges():
                if e.src == name:
                    indegree[e.dst] -= 1
                    if indegree[e.dst] == 0:
                        ready.append(e.dst)
        return order

    def _forward_edges(self) -> Iterator[Edge]:
        return (
            e
            for e in self.edges
            if not e.feedback and e.src in self.nodes and e.dst in self.nodes
        )

    def find_cycle(self) -> list[str]:
        """One cycle of non-feedback edges as ``[a, b, ..., a]``, or ``[]``."""
        succ: dict[str, list[str]] = {n: [] for n in self.nodes}
        for e in self._forward_edges():
            succ[e.src].append(e.dst)
        state: dict[str, int] = {}  # 1 visiting, 2 done
        stack: list[str] = []

        def visit(n: str) -> list[str]:
            state[n] = 1
            stack.append(n)
            for m in succ[n]:
                if state.get(m) == 1:
                    return [*stack[stack.index(m) :], m]
                if m not in state:
                    found = visit(m)
                    if found:
                        return found
            stack.pop()
            state[n] = 2
            return []

        for n in self.nodes:
            if n not in state:
                found = visit(n)
                if found:
                    return found
        return []

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (names and references, no objects)."""
        return {
            "name": self.name,
            "nodes": [
                {
                    "name": n.name,
                    "role": n.role,
                    "ref": n.ref.describe(),
                    "parallelism": n.parallelism,
                }
                for n in self.nodes.values()
            ],
            "edges": [
                {
                    "from": e.src,
                    "to": e.dst,
                    "input": e.input_index,
                    "router": e.router,
                    "key": e.key.name if e.key else None,
                }
                for e in self.edges
            ],
        }


def _cycle_message(cycle: list[str]) -> str:
    return (
        f"cycle {' -> '.join(cycle)}: a cycle needs one edge marked as an explicit "
        f"feedback edge (feedback: true)"
    )


def cycle_message(cycle: list[str]) -> str:
    """The validation message for a cycle without a feedback edge."""
    return _cycle_message(cycle)
