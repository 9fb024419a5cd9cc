"""The mypyc build's module list (sim/compiled_build.py), checked without compiling.

The suite never compiles: these tests read the sources only. They catch the two ways
an edit elsewhere breaks `make sim-compiled` quietly: a listed module renamed or
removed, and an interpreted class that subclasses a compiled one (mypyc's native
classes refuse that at import time, so the compiled copy would fail where the pure
tree works).
"""

from __future__ import annotations

import ast
import sys

import pytest
from helpers import compiled_probe

from sim import compiled_build as cb


def test_every_listed_module_and_package_exists() -> None:
    assert len(set(cb.MODULES)) == len(cb.MODULES)
    for rel in cb.MODULES:
        assert (cb.ROOT / rel).is_file(), rel
        # only the packages the build copies can be compiled in the copy
        assert rel.split("/")[0] in cb.PACKAGES, rel
    for pkg in cb.PACKAGES:
        assert (cb.ROOT / pkg).is_dir(), pkg
    for test in cb.CHECK_TESTS:
        assert (cb.ROOT / test).is_file(), test
    assert cb.module_names()[cb.MODULES.index("gossip/swim.py")] == "gossip.swim"


def _classes(tree: ast.Module) -> list[ast.ClassDef]:
    return [c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)]


def test_no_interpreted_class_subclasses_a_compiled_one() -> None:
    compiled = set(cb.module_names())
    defined: dict[str, set[str]] = {}  # compiled module → its class names
    for rel in cb.MODULES:
        tree = ast.parse((cb.ROOT / rel).read_text())
        defined[rel.removesuffix(".py").replace("/", ".")] = {c.name for c in _classes(tree)}
    offenders = []
    for pkg in ("overlay", "dht", "gossip", "store", "sim"):
        for path in sorted((cb.ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(cb.ROOT).as_posix()
            if rel in cb.MODULES:
                continue  # compiled subclasses of compiled classes are fine
            tree = ast.parse(path.read_text())
            imported = {a.asname or a.name for node in ast.walk(tree)
                        if isinstance(node, ast.ImportFrom) and node.module in compiled
                        for a in node.names if a.name in defined[node.module]}
            for c in _classes(tree):
                for base in c.bases:
                    if isinstance(base, ast.Name) and base.id in imported:
                        offenders.append(f"{rel}: {c.name}({base.id})")
    assert not offenders, (
        "interpreted subclasses of compiled classes (add the module to MODULES in "
        f"sim/compiled_build.py, or take the base out): {offenders}")


def test_probe_names_modules_imported_from_source() -> None:
    # In the pure tree every listed module comes from its .py: the probe must say so.
    assert compiled_probe.not_compiled(["sim.engine"])[0].startswith("sim.engine (")
    assert compiled_probe.not_compiled([]) == []


def test_list_prints_the_dotted_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert cb.main(["--list"]) == 0
    assert capsys.readouterr().out.split() == cb.module_names()
    assert "sim.engine" in sys.modules
