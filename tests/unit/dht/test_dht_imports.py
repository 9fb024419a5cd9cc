"""No import cycles inside dht/, counting imports made only for type checking.

The graph is built from the source with `ast` (every `import dht.x` / `from dht[.x]
import …`, wherever it stands: module level, functions, `if TYPE_CHECKING:`), so a
cycle hidden behind a deferred or annotation-only import still fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dht

PKG = Path(dht.__file__).parent


def _module(path: Path) -> str:
    return "dht" if path.name == "__init__.py" else f"dht.{path.stem}"


def _targets(node: ast.AST, modules: set[str]) -> set[str]:
    """The dht modules an import statement reaches (`from dht import x`: x if it is a
    module, else the package itself)."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        found |= {a.name for a in node.names if a.name in modules}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "dht":
            for a in node.names:
                found.add(f"dht.{a.name}" if f"dht.{a.name}" in modules else "dht")
        elif node.module in modules:
            found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PKG.glob("*.py"))
    modules = {_module(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for p in paths:
        tree = ast.parse(p.read_text(), filename=str(p))
        me = _module(p)
        edges: set[str] = set()
        for node in ast.walk(tree):
            edges |= _targets(node, modules)
        graph[me] = edges - {me}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m):], m]
            if m not in state and (c := visit(m)) is not None:
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)) is not None:
            return c
    return None


def test_graph_sees_type_checking_imports() -> None:
    g = import_graph()
    assert "dht.sweep" in g["dht.ops"]  # imported only under TYPE_CHECKING
    assert {"dht.ops", "dht.lookup_runner", "dht.serve", "dht.reprovide"} <= g["dht.core"]


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_dht_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])
