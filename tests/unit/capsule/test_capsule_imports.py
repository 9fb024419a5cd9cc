"""overlay/capsule has no import cycle, counting imports under `if TYPE_CHECKING:` too.

The graph is built from the source with `ast` (nothing is imported), so a cycle that
only a type annotation closes is caught as well as one that would fail at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import overlay.capsule

PACKAGE = "overlay.capsule"
ROOT = Path(overlay.capsule.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([PACKAGE, *parts])


def _targets(node: ast.AST, here: str, is_pkg: bool) -> list[str]:
    """Modules of `overlay.capsule` that one import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = here.split(".")
        base = base if is_pkg else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        mod = ".".join([*base, node.module] if node.module else base)
    else:
        mod = node.module or ""
    # `from overlay.capsule import events` names a module; `from x import Name` a name.
    return [mod, *(f"{mod}.{a.name}" for a in node.names)]


def import_graph() -> dict[str, set[str]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(f): f for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):  # walks into `if TYPE_CHECKING:` blocks and functions
            for target in _targets(node, mod, is_pkg):
                if target in modules and target != mod:
                    graph[mod].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path a → … → a, or None (iterative DFS, white/grey/black)."""
    state: dict[str, int] = dict.fromkeys(graph, 0)
    for start in sorted(graph):
        if state[start]:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = todo.pop()
            if state[nxt] == 1:
                return [*path[path.index(nxt) :], nxt]
            if state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_graph_sees_the_package() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.custody" in graph
    assert f"{PACKAGE}.replication" in graph[f"{PACKAGE}.custody"]
    assert f"{PACKAGE}.events" in graph[f"{PACKAGE}.core"]  # `from overlay.capsule import events`


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_type_checking_imports_count() -> None:
    src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from overlay.capsule import x\n"
    nodes = list(ast.walk(ast.parse(src)))
    names = [t for n in nodes for t in _targets(n, f"{PACKAGE}.y", False)]
    assert f"{PACKAGE}.x" in names


def test_no_import_cycle_in_capsule() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])
