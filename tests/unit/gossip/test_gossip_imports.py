"""The gossip package has no import cycle among its modules.

Every `import` statement counts, wherever it stands: module level, inside functions,
and under `if TYPE_CHECKING:` (a cycle hidden there is still a cycle in the design).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "gossip"


def _imported_modules(tree: ast.AST, modules: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:  # relative: `from . import x`, `from .x import y`
                base = node.module or ""
                names = [base] if base else [a.name for a in node.names]
                names = [f"gossip.{n}" for n in names]
            elif node.module == "gossip":
                names = [f"gossip.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "gossip" and len(parts) > 1 and parts[1] in modules:
                found.add(parts[1])
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.glob("*.py"))
    modules = {f.stem for f in files}
    return {
        f.stem: _imported_modules(ast.parse(f.read_text(), str(f)), modules) - {f.stem}
        for f in files
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (as a path that starts and ends at the same module), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_graph_is_read() -> None:
    graph = import_graph()
    assert "swim" in graph and "member_table" in graph["swim"]
    assert "transitions" in graph["swim"]


def test_gossip_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in gossip/: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
